"""The export appears whole or not at all: a failed or killed export never leaves a folder that
`load_dataset` opens, an earlier export survives it, and a re-export is never read from a stale cache."""

import os
import subprocess
import sys
import time

import datasets
import pytest

from avs_models.data import AVSBenchReader, AVSBenchValidationError, export_avsbench, make_synthetic_avsbench
from avs_models.data.avsbench import mask_paths, wav_path
from avs_models.data.export import REPORT_JSON, PreparationReport

SPLITS = ("train", "validation", "test")
# Exports one subset a row group per video, so shards appear on disk one video at a time.
EXPORT_SCRIPT = (
    "import sys\n"
    "from avs_models.data import export_avsbench\n"
    "export_avsbench(sys.argv[1], sys.argv[2], [sys.argv[3]], rows_per_group=1, progress=False)\n"
)


@pytest.fixture
def raw(tmp_path):
    root = tmp_path / "raw"
    make_synthetic_avsbench(root, "ms3", 6, seed=2, image_size=32)
    make_synthetic_avsbench(root, "s4", 5, seed=2, image_size=32)
    return root


def _load(out, subset):
    """Video ids per split, read from the files (not from a cache of an earlier load)."""
    return {
        split: datasets.load_dataset(str(out), subset, split=split, download_mode="force_redownload")[
            "video_id"
        ]
        for split in SPLITS
    }


def _ids(raw, subset):
    reader = AVSBenchReader(raw, subset)
    return {
        hf: [r.video_id for r in reader.records(split)] for split, hf in zip(("train", "val", "test"), SPLITS)
    }


def _leftovers(out):
    return sorted(path.name for path in out.parent.iterdir() if path.name.startswith(f".{out.name}."))


def _assert_as_before(out, raw, earlier_export):
    """`out` is the earlier export, whole, or absent (and `load_dataset` finds nothing there)."""
    if earlier_export:
        assert _load(out, "ms3") == _ids(raw, "ms3")
    else:
        assert not out.exists()
        with pytest.raises(FileNotFoundError):
            datasets.load_dataset(str(out), "ms3", split="train")


@pytest.mark.parametrize("earlier_export", [False, True], ids=["new-folder", "over-an-earlier-export"])
def test_failure_midway_leaves_nothing_behind(raw, tmp_path, earlier_export):
    out = tmp_path / "out"
    if earlier_export:
        export_avsbench(raw, out, ["ms3"], progress=False)
    # The test video breaks a rule, so train and validation shards are written before the export stops.
    test_video = AVSBenchReader(raw, "ms3").records("test")[0]
    mask = mask_paths(raw / "Multi-sources", "ms3", test_video)[4]
    mask.write_bytes(b"broken")
    with pytest.raises(AVSBenchValidationError, match="unreadable ground-truth mask"):
        export_avsbench(raw, out, ["ms3"], rows_per_group=1, progress=False)
    assert _leftovers(out) == []
    _assert_as_before(out, raw, earlier_export)


def _wait_for(condition, child, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise AssertionError(f"the export ended before it was killed:\n{child.stderr.read().decode()}")
        if found := condition():
            return found
        time.sleep(0.05)
    raise AssertionError(f"no shard appeared within {timeout} s")


@pytest.mark.parametrize("earlier_export", [False, True], ids=["new-folder", "over-an-earlier-export"])
def test_killed_export_leaves_nothing_load_dataset_opens(raw, tmp_path, earlier_export):
    out = tmp_path / "out"
    if earlier_export:
        export_avsbench(raw, out, ["ms3"], progress=False)
    # The test video's wav is a pipe nobody writes to: the export process blocks on it, after
    # writing the train and validation shards, until it is killed.
    test_video = AVSBenchReader(raw, "ms3").records("test")[0]
    wav = wav_path(raw / "Multi-sources", "ms3", test_video)
    wav_bytes = wav.read_bytes()
    wav.unlink()
    os.mkfifo(wav)
    child = subprocess.Popen(
        [sys.executable, "-c", EXPORT_SCRIPT, str(raw), str(out), "ms3"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        [staging] = _wait_for(
            lambda: [p for p in tmp_path.glob(".out.partial-*") if list(p.glob("ms3/validation-*.parquet"))],
            child,
            timeout=300,
        )
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -9
    # The half-written export is only in the hidden staging folder, which the next export removes.
    assert staging.is_dir() and list((staging / "ms3").glob("train-*-of-*.parquet"))
    _assert_as_before(out, raw, earlier_export)
    wav.unlink()
    wav.write_bytes(wav_bytes)
    report = export_avsbench(raw, out, ["ms3"], progress=False)
    assert report.written == {"ms3": {"train": 4, "validation": 1, "test": 1}}
    assert _leftovers(out) == [] and _load(out, "ms3") == _ids(raw, "ms3")


def test_subsets_exported_one_at_a_time_are_kept(raw, tmp_path):
    out = tmp_path / "out"
    export_avsbench(raw, out, ["ms3"], progress=False)
    s4_test = AVSBenchReader(raw, "s4").records("train")[0]
    wav_path(raw / "Single-source", "s4", s4_test).write_bytes(b"RIFF nonsense")
    report = export_avsbench(raw, out, ["s4"], on_error="skip", progress=False)
    # ms3 comes along from the earlier export, with its report; s4 has its own.
    assert report.written == {
        "s4": {"train": 2, "validation": 1, "test": 1},
        "ms3": {"train": 4, "validation": 1, "test": 1},
    }
    assert PreparationReport.from_json((out / REPORT_JSON).read_text()) == report
    assert [row.rule for row in report.subsets["s4"].skipped] == ["unreadable-wav"]
    assert _load(out, "ms3") == _ids(raw, "ms3")
    s4_ids = _ids(raw, "s4")
    s4_ids["train"].remove(s4_test.video_id)
    assert _load(out, "s4") == s4_ids
    card = (out / "README.md").read_text()
    assert "config_name: ms3" in card and "config_name: s4" in card and "| s4 | 5 | 2 | 1 | 1 | 1 |" in card


def test_export_refuses_a_folder_that_is_not_an_export(raw, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(
        FileExistsError, match=r"out holds notes.txt, which is not part of an AVSBench export"
    ):
        export_avsbench(raw, out, ["ms3"], progress=False)
    assert (out / "notes.txt").read_text() == "mine" and _leftovers(out) == []
    (out / "notes.txt").unlink()
    (out / "ms3").mkdir()
    (out / "ms3" / "train.csv").write_text("")
    with pytest.raises(FileExistsError, match="holds ms3"):
        export_avsbench(raw, out, ["ms3"], progress=False)
    target_file = tmp_path / "file"
    target_file.write_text("")
    with pytest.raises(FileExistsError, match="exists and is not a folder"):
        export_avsbench(raw, target_file, ["ms3"], progress=False)


def test_a_reexport_is_not_read_from_the_cache_of_the_earlier_one(raw, tmp_path):
    """`datasets` caches a local folder by its name and card; the card's row counts and sizes keep
    a changed export from being read from the cache of the earlier one."""
    out = tmp_path / "out"
    export_avsbench(raw, out, ["s4"], progress=False)
    assert datasets.load_dataset(str(out), "s4", split="train").num_rows == 3
    record = AVSBenchReader(raw, "s4").records("train")[1]
    wav_path(raw / "Single-source", "s4", record).unlink()
    export_avsbench(raw, out, ["s4"], on_error="skip", progress=False)
    assert datasets.load_dataset(str(out), "s4", split="train")["video_id"] == [
        r.video_id for r in AVSBenchReader(raw, "s4").records("train") if r.video_id != record.video_id
    ]
    # Another folder of the same name with other videos: its own rows too.
    other_raw = tmp_path / "other" / "raw"
    make_synthetic_avsbench(other_raw, "s4", 8, seed=9, image_size=32)
    export_avsbench(other_raw, tmp_path / "other" / "out", ["s4"], progress=False)
    assert datasets.load_dataset(str(tmp_path / "other" / "out"), "s4", split="train").num_rows == 4


def test_card_row_counts_catch_a_lost_shard(raw, tmp_path):
    out = tmp_path / "out"
    export_avsbench(raw, out, ["ms3"], rows_per_group=1, max_shard_bytes=1, progress=False)
    shards = sorted((out / "ms3").glob("train-*.parquet"))
    assert len(shards) == 4
    shards[1].unlink()
    with pytest.raises(datasets.exceptions.NonMatchingSplitsSizesError):
        datasets.load_dataset(str(out), "ms3", split="train", cache_dir=str(tmp_path / "cache"))
