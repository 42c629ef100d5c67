"""Synthetic AVSBench in the official layout -> builder / reader -> Parquet export -> stock load_dataset."""

import io
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile
from PIL import Image

from avs_models.data import AVSBenchReader, color_mask_to_class_ids, export_avsbench, make_synthetic_avsbench
from avs_models.data.avsbench import SYNTHETIC_CATEGORIES, frame_paths, mask_paths, wav_path
from avs_models.data.synthetic import kind_class_id

REPO_ROOT = Path(__file__).resolve().parents[1]
NUM_VIDEOS = 6
IMAGE_SIZE = 48


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    for subset in ("s4", "ms3", "avss"):
        make_synthetic_avsbench(root, subset, NUM_VIDEOS, seed=7, image_size=IMAGE_SIZE)
    return root


@pytest.fixture(scope="module")
def export_dir(raw_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    # A tiny shard size forces several shards per split.
    report = export_avsbench(raw_dir, out, max_shard_bytes=20_000, rows_per_group=1, progress=False)
    assert report.written == {
        subset: {"train": 4, "validation": 1, "test": 1} for subset in ("s4", "ms3", "avss")
    }
    return out


def _pixels(image) -> np.ndarray:
    if isinstance(image, dict):
        image = Image.open(io.BytesIO(image["bytes"]))
    return np.asarray(image)


def _expected_indices(subset, split, group):
    if subset == "s4":
        return [0] if split == "train" else list(range(5))
    if subset == "ms3":
        return list(range(5))
    if group == "v1s" and split == "train":
        return [0]
    return list(range(10 if group == "v2" else 5))


def _check_against_files(subset, split, example, reader):
    """Every field of `example` against the files the generator wrote."""
    record = next(r for r in reader.records(split) if r.video_id == example["video_id"])
    subset_dir = reader.subset_dir
    group = example["label_set"] if subset == "avss" else example["category"]
    assert group == record.group
    if subset == "s4":
        assert group in SYNTHETIC_CATEGORIES
    frames = frame_paths(subset_dir, subset, record)
    assert len(example["frames"]) == len(frames) == (10 if group == "v2" else 5)
    for image, path in zip(example["frames"], frames):
        assert np.array_equal(_pixels(image), np.asarray(Image.open(path)))
        assert _pixels(image).shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert example["audio"]["bytes"] == wav_path(subset_dir, subset, record).read_bytes()
    samples, rate = soundfile.read(io.BytesIO(example["audio"]["bytes"]))
    assert rate == 16000 and samples.shape == (16000 * len(frames),)
    assert list(example["mask_frame_indices"]) == _expected_indices(subset, split, group)
    labels = example["semantic_labels" if subset == "avss" else "masks"]
    paths = mask_paths(subset_dir, subset, record)
    assert len(labels) == len(paths)
    for index, label in zip(example["mask_frame_indices"], labels):
        written = np.asarray(Image.open(paths[index]).convert("RGB" if subset == "avss" else "L"))
        label = _pixels(label)
        if subset == "avss":
            assert np.array_equal(label, color_mask_to_class_ids(written))
            assert set(np.unique(label)) <= {0} | {kind_class_id(k) for k in range(len(SYNTHETIC_CATEGORIES))}
        else:
            assert np.array_equal(label, (written >= 128).astype(np.uint8))
            assert set(np.unique(label)) <= {0, 1}
        assert label.any(), "every annotated synthetic frame shows at least one sounding object"


@pytest.mark.parametrize("subset", ["s4", "ms3", "avss"])
def test_export_reloads_with_stock_load_dataset(subset, raw_dir, export_dir):
    reader = AVSBenchReader(raw_dir, subset)
    for split, hf_split in (("train", "train"), ("val", "validation"), ("test", "test")):
        loaded = datasets.load_dataset(str(export_dir), subset, split=hf_split)
        assert loaded.num_rows == len(reader.records(split))
        assert [e["video_id"] for e in loaded] == [r.video_id for r in reader.records(split)]
        assert isinstance(loaded.features["audio"], datasets.Audio)
        for example in loaded:
            _check_against_files(subset, split, example, reader)


def test_export_streams_with_stock_load_dataset(raw_dir, export_dir):
    """Large sets need not be downloaded or converted whole: streaming reads the shards as they are."""
    reader = AVSBenchReader(raw_dir, "avss")
    streamed = datasets.load_dataset(str(export_dir), "avss", split="train", streaming=True)
    examples = list(streamed)
    assert [example["video_id"] for example in examples] == [r.video_id for r in reader.records("train")]
    for example in examples:
        _check_against_files("avss", "train", example, reader)


def test_export_is_sharded_and_has_a_card(export_dir):
    shards = sorted(p.name for p in (export_dir / "avss").glob("train-*.parquet"))
    assert len(shards) > 1 and shards[0].endswith(f"-of-{len(shards):05d}.parquet")
    card = (export_dir / "README.md").read_text()
    assert "config_name: avss" in card and "path: s4/validation-*.parquet" in card
    assert "obtained from them" in card
    # The AVSS class names and colours, for users of the stock library: ids 0..70 in order.
    assert "| 0 | background | (0, 0, 0) |" in card and "| 1 | accordion | (128, 0, 0) |" in card
    assert "| 70 | woman |" in card and "| 71 |" not in card


def test_builder_generates_the_same_examples(raw_dir, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "datasets_scripts" / "avsbench"))
    sys.modules.pop("avsbench", None)
    from avsbench import AVSBench

    builder = AVSBench(config_name="s4", data_dir=str(raw_dir), cache_dir=str(tmp_path))
    builder.download_and_prepare()
    train = builder.as_dataset(split="train")
    reader = AVSBenchReader(raw_dir, "s4")
    assert train.num_rows == 4
    for example in train:
        _check_against_files("s4", "train", example, reader)
    assert list(train[0]["mask_frame_indices"]) == [0]
    avss_info = AVSBench(config_name="avss", data_dir=str(raw_dir), cache_dir=str(tmp_path)).info
    assert "0 background (0, 0, 0)" in avss_info.description and "70 woman" in avss_info.description


def test_builder_checks_the_files_too(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "datasets_scripts" / "avsbench"))
    sys.modules.pop("avsbench", None)
    from avsbench import AVSBench

    from avs_models.data import AVSBenchValidationError

    raw = tmp_path / "raw"
    subset_dir = make_synthetic_avsbench(raw, "ms3", 3, seed=1, image_size=40)
    record = AVSBenchReader(raw, "ms3").records("val")[0]
    mask = mask_paths(subset_dir, "ms3", record)[1]
    Image.open(mask).resize((20, 20)).save(mask)
    builder = AVSBench(config_name="ms3", data_dir=str(raw), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(datasets.exceptions.DatasetGenerationError) as error:
        builder.download_and_prepare()
    assert isinstance(error.value.__cause__, AVSBenchValidationError)
    assert error.value.__cause__.rule == "mask-size" and error.value.__cause__.path == mask
    # A split with no videos stops the build too, instead of leaving the split out.
    csv_path = subset_dir / "ms3_meta_data.csv"
    csv_path.write_text(
        "".join(line for line in csv_path.read_text().splitlines(True) if ",test" not in line)
    )
    with pytest.raises(AVSBenchValidationError, match="lists no usable videos for split 'test'"):
        AVSBench(
            config_name="ms3", data_dir=str(raw), cache_dir=str(tmp_path / "cache2")
        ).download_and_prepare()


def test_generator_is_deterministic(tmp_path):
    first = make_synthetic_avsbench(tmp_path / "a", "ms3", 2, seed=3, image_size=40)
    second = make_synthetic_avsbench(tmp_path / "b", "ms3", 2, seed=3, image_size=40)
    other = make_synthetic_avsbench(tmp_path / "c", "ms3", 2, seed=4, image_size=40)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    wav = next(f for f in files if f.suffix == ".wav")
    other_wav = next(p for p in other.rglob("*.wav"))
    assert (first / wav).read_bytes() != other_wav.read_bytes()
