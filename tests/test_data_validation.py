"""`prepare-avsbench` checks every file: each corruption of a synthetic AVSBench folder stops the
export with a message naming the file and the rule, or, with `on_error="skip"`, leaves out just
that video and lists it in the report; no row is lost or duplicated either way."""

import csv
import io
import json
import pickle
import re
import shutil

import datasets
import numpy as np
import pytest
import soundfile
from PIL import Image

from avs_models.cli import main as cli_main
from avs_models.data import (
    AVSBenchCollator,
    AVSBenchReader,
    AVSBenchValidationError,
    PreparationReport,
    export_avsbench,
    make_synthetic_avsbench,
)
from avs_models.data.avsbench import decode_binary_mask, frame_paths, mask_paths, wav_path
from avs_models.data.export import REPORT_JSON, REPORT_MARKDOWN

SIZE = 64  # frames are 64x64; 6 videos per subset: train 4, val 1, test 1
SPLIT_COUNTS = {"train": 4, "validation": 1, "test": 1}
FOLDERS = {"s4": "Single-source", "ms3": "Multi-sources", "avss": "AVSS"}
CSV_NAMES = {"s4": "s4_meta_data.csv", "ms3": "ms3_meta_data.csv", "avss": "metadata.csv"}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    for subset in FOLDERS:
        make_synthetic_avsbench(root, subset, 6, seed=5, image_size=SIZE)
    return root


@pytest.fixture
def copy_subset(pristine, tmp_path):
    """A fresh copy of one subset's folder, to corrupt."""

    def copy(subset):
        raw = tmp_path / "raw"
        shutil.copytree(pristine / FOLDERS[subset], raw / FOLDERS[subset])
        return raw, raw / FOLDERS[subset]

    return copy


def _train_record(subset_dir, subset, index=1):
    # Train video 1: for AVSS a v1m clip (label sets cycle v1s, v1m, v2).
    return AVSBenchReader(subset_dir, subset).records("train")[index]


def _rewrite_grey(path, levels):
    array = np.asarray(Image.open(path).convert("L"))
    Image.fromarray(np.where(array > 0, levels[1], levels[0]).astype(np.uint8)).save(path)


def _rewrite_wav(path, transform, subtype="PCM_16"):
    samples, rate = soundfile.read(path, dtype="float32")
    soundfile.write(path, transform(samples, rate), rate, subtype=subtype)


# Each corruption changes one file of train video 1 and returns that file.
def mask_32_beside_64_frames(d, r):
    path = mask_paths(d, "ms3", r)[2]
    Image.open(path).resize((32, 32), Image.NEAREST).save(path)
    return path


def frame_100x80(d, r):
    path = frame_paths(d, "s4", r)[3]
    Image.new("RGB", (100, 80), (10, 20, 30)).save(path)
    return path


def labels_rgb_wrong_size(d, r):
    path = mask_paths(d, "avss", r)[1]
    Image.open(path).resize((40, SIZE), Image.NEAREST).save(path)
    return path


def grey_0_100_mask(d, r):
    path = mask_paths(d, "s4", r)[0]
    _rewrite_grey(path, (0, 100))
    return path


def soft_edged_mask(d, r):
    path = mask_paths(d, "ms3", r)[0]
    Image.open(path).resize((16, 16), Image.BILINEAR).resize((SIZE, SIZE), Image.BILINEAR).save(path)
    return path


def mask_mixing_1_and_255(d, r):
    path = mask_paths(d, "ms3", r)[1]
    array = np.asarray(Image.open(path)).copy()
    array[:2, :2] = 1
    Image.fromarray(array).save(path)
    return path


def red_mask(d, r):
    path = mask_paths(d, "s4", r)[0]
    array = np.asarray(Image.open(path).convert("L"))
    Image.fromarray(np.stack([array, 0 * array, 0 * array], axis=-1)).save(path)
    return path


def colour_outside_palette(d, r):
    path = mask_paths(d, "avss", r)[0]
    array = np.asarray(Image.open(path).convert("RGB")).copy()
    array[:3, :4] = (255, 255, 255)
    Image.fromarray(array).save(path)
    return path


def wav_cut_to_1_3_of_5_seconds(d, r):
    path = wav_path(d, "ms3", r)
    _rewrite_wav(path, lambda samples, rate: samples[: int(1.3 * rate)])
    return path


def wav_of_7_seconds(d, r):
    path = wav_path(d, "s4", r)
    _rewrite_wav(path, lambda samples, rate: np.concatenate([samples, samples[: 2 * rate]]))
    return path


def wav_truncated_mid_file(d, r):
    path = wav_path(d, "s4", r)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def wav_of_garbage(d, r):
    path = wav_path(d, "avss", r)
    path.write_bytes(b"RIFF garbage, not audio")
    return path


def wav_with_nan(d, r):
    path = wav_path(d, "ms3", r)

    def poison(samples, rate):
        samples = samples.copy()
        samples[100] = np.nan
        return samples

    _rewrite_wav(path, poison, subtype="FLOAT")
    return path


def wav_is_a_folder(d, r):
    path = wav_path(d, "s4", r)
    path.unlink()
    path.mkdir()
    return path


def _deleting(name, subset, locate):
    """A corruption that deletes the file `locate(subset_dir, subset, record)` names."""

    def corrupt(d, r):
        path = locate(d, subset, r)
        path.unlink()
        return path

    corrupt.__name__ = name
    return corrupt


missing_frame = _deleting("missing_frame", "ms3", lambda d, s, r: frame_paths(d, s, r)[4])
missing_mask = _deleting("missing_mask", "s4", lambda d, s, r: mask_paths(d, s, r)[0])
missing_labels_rgb = _deleting("missing_labels_rgb", "avss", lambda d, s, r: mask_paths(d, s, r)[3])
missing_wav = _deleting("missing_wav", "avss", wav_path)


def truncated_png_frame(d, r):
    path = frame_paths(d, "s4", r)[1]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def truncated_jpeg_frame(d, r):
    path = frame_paths(d, "avss", r)[2]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def text_file_as_frame(d, r):
    path = frame_paths(d, "ms3", r)[0]
    path.write_bytes(b"not an image")
    return path


def sixteen_bit_frame(d, r):
    path = frame_paths(d, "ms3", r)[2]
    Image.fromarray(np.full((SIZE, SIZE), 4000, dtype=np.uint16)).save(path)
    return path


def one_bit_frame(d, r):
    path = frame_paths(d, "s4", r)[2]
    Image.open(path).convert("1").save(path)
    return path


def sixteen_bit_mask(d, r):
    path = mask_paths(d, "s4", r)[0]
    array = np.asarray(Image.open(path).convert("L")).astype(np.uint16) * 257
    Image.fromarray(array).save(path)
    return path


def extra_avss_frame(d, r):
    frames = frame_paths(d, "avss", r)
    shutil.copy(frames[0], frames[0].parent / f"{len(frames)}.jpg")
    return frames[0].parent


CORRUPTIONS = [
    (
        "ms3",
        mask_32_beside_64_frames,
        "mask-size",
        re.escape("ground-truth mask is 32x32 but the video's frames are 64x64 (width x height)"),
    ),
    (
        "s4",
        frame_100x80,
        "frame-size",
        r"frame is 100x80 but the video's first frame .*_1.png is 64x64 \(width x height\)",
    ),
    (
        "avss",
        labels_rgb_wrong_size,
        "mask-size",
        re.escape("labels_rgb label map is 40x64 but the video's frames are 64x64 (width x height)"),
    ),
    (
        "s4",
        grey_0_100_mask,
        "mask-not-binary",
        r"ground-truth mask is not binary: its grey levels are 0, 100 \(accepted: 0 and 255, or 0 and 1\)",
    ),
    ("ms3", soft_edged_mask, "mask-not-binary", r"its grey levels are 0, \d+, \d+, \d+, \d+, \d+, \.\.\."),
    ("ms3", mask_mixing_1_and_255, "mask-not-binary", re.escape("its grey levels are 0, 1, 255")),
    ("s4", red_mask, "mask-not-binary", r"it has colours that are not grey \(\(255, 0, 0\)\)"),
    (
        "avss",
        colour_outside_palette,
        "label-colour",
        r"colours outside the AVSS palette: \(255, 255, 255\) at 12 pixels",
    ),
    (
        "ms3",
        wav_cut_to_1_3_of_5_seconds,
        "audio-length",
        re.escape("audio lasts 1.30 s; a 5-frame clip needs 5 s give or take 1 s"),
    ),
    ("s4", wav_of_7_seconds, "audio-length", re.escape("audio lasts 7.00 s; a 5-frame clip needs 5 s")),
    (
        "s4",
        wav_truncated_mid_file,
        "wav-truncated",
        re.escape("wav file is truncated: its header declares 5.00 s of audio but the file holds 2.50 s"),
    ),
    ("avss", wav_of_garbage, "unreadable-wav", re.escape("unreadable wav file: Format not recognised")),
    ("ms3", wav_with_nan, "audio-non-finite", re.escape("wav file holds NaN or infinite samples")),
    ("s4", wav_is_a_folder, "unreadable-file", re.escape("cannot read the wav file: Is a directory")),
    ("ms3", missing_frame, "missing-file", re.escape("missing frame")),
    ("s4", missing_mask, "missing-file", re.escape("missing ground-truth mask")),
    ("avss", missing_labels_rgb, "missing-file", re.escape("missing labels_rgb label map")),
    ("avss", missing_wav, "missing-file", re.escape("missing wav file")),
    ("s4", truncated_png_frame, "unreadable-image", re.escape("unreadable frame: image file is truncated")),
    (
        "avss",
        truncated_jpeg_frame,
        "unreadable-image",
        re.escape("unreadable frame: image file is truncated"),
    ),
    (
        "ms3",
        text_file_as_frame,
        "unreadable-image",
        re.escape("unreadable frame: not an image format Pillow recognises"),
    ),
    (
        "ms3",
        sixteen_bit_frame,
        "image-mode",
        re.escape("frame has PIL mode 'I;16'; expected an 8-bit image of mode L, LA, P, RGB, RGBA"),
    ),
    ("s4", one_bit_frame, "image-mode", re.escape("frame has PIL mode '1'")),
    ("s4", sixteen_bit_mask, "image-mode", re.escape("ground-truth mask has PIL mode 'I;16'")),
    (
        "avss",
        extra_avss_frame,
        "frame-count",
        r"frames folder holds 6 .jpg files; a v1m clip has 5 \(0.jpg to 4.jpg\)",
    ),
]


def _check_export(out, subset, expected_ids):
    """Each split of the export holds exactly `expected_ids[split]`, in metadata order."""
    for split, hf_split in (("train", "train"), ("val", "validation"), ("test", "test")):
        loaded = datasets.load_dataset(str(out), subset, split=hf_split)
        assert loaded["video_id"] == expected_ids[split]


@pytest.mark.parametrize(
    "subset, corrupt, rule, pattern", CORRUPTIONS, ids=[corrupt.__name__ for _, corrupt, *_ in CORRUPTIONS]
)
def test_corruption_stops_the_export_or_is_skipped_and_reported(
    subset, corrupt, rule, pattern, copy_subset, tmp_path
):
    raw, subset_dir = copy_subset(subset)
    record = _train_record(subset_dir, subset)
    path = corrupt(subset_dir, record)

    # Default: stop at the first problem, naming the file, the rule and the video; nothing is written.
    out = tmp_path / "out"
    with pytest.raises(AVSBenchValidationError) as error:
        export_avsbench(raw, out, [subset], progress=False)
    message = str(error.value)
    assert error.value.rule == rule and error.value.path == path
    assert isinstance(error.value, FileNotFoundError) == (rule == "missing-file")
    assert message.startswith(f"{path}: ")
    assert f"rule {rule}; video {record.video_id!r}, {subset} train, metadata line {record.line}" in message
    assert "--on-error skip" in message and "\n" not in message
    # The error survives pickling (DataLoader workers, multiprocessing) with all its facts.
    copied = pickle.loads(pickle.dumps(error.value))
    assert type(copied) is type(error.value) and str(copied) == message and copied.rule == rule
    assert re.search(pattern, message), message
    assert not out.exists() and not list(tmp_path.glob(".out.*"))

    # on_error="skip": that video alone is left out, and the report says which and why.
    report = export_avsbench(raw, out, [subset], on_error="skip", progress=False)
    subset_report = report.subsets[subset]
    assert subset_report.written == {**SPLIT_COUNTS, "train": 3}
    assert (
        subset_report.metadata_rows == 6 == sum(subset_report.written.values()) + len(subset_report.skipped)
    )
    [skipped] = subset_report.skipped
    assert (skipped.video_id, skipped.split, skipped.line, skipped.rule) == (
        record.video_id,
        "train",
        record.line,
        rule,
    )
    assert skipped.file == path.relative_to(raw).as_posix()
    assert re.search(pattern, skipped.reason)
    reader = AVSBenchReader(raw, subset)
    expected = {split: [r.video_id for r in reader.records(split)] for split in ("train", "val", "test")}
    expected["train"].remove(record.video_id)
    _check_export(out, subset, expected)
    # The report on disk is the one returned, and the dataset card counts the skipped video.
    assert PreparationReport.from_json((out / REPORT_JSON).read_text()) == report
    markdown = (out / REPORT_MARKDOWN).read_text()
    assert f"| {subset} | 6 | 3 | 1 | 1 | 1 |" in markdown and f"| {subset} | {rule} | 1 |" in markdown
    assert f"| {record.video_id} | {rule} | {skipped.file} |" in markdown
    card = (out / "README.md").read_text()
    assert "1 metadata row(s) or video(s) broke a rule and were skipped" in card
    assert f"| {subset} | 6 | 3 | 1 | 1 | 1 |" in card


def _append_rows(subset_dir, subset, rows):
    with open(subset_dir / CSV_NAMES[subset], "a", newline="") as handle:
        csv.writer(handle).writerows(rows)


def _csv_rows(subset_dir, subset):
    with open(subset_dir / CSV_NAMES[subset], newline="") as handle:
        return list(csv.reader(handle))


def test_duplicated_row_gives_no_extra_row(copy_subset, tmp_path):
    raw, subset_dir = copy_subset("ms3")
    rows = _csv_rows(subset_dir, "ms3")
    _append_rows(subset_dir, "ms3", [rows[3]])  # 7 rows for 6 videos
    with pytest.raises(
        AVSBenchValidationError,
        match=r"ms3_meta_data.csv: line 8 \(video '.*'\) repeats line 4 \(rule duplicate-row\)",
    ):
        export_avsbench(raw, tmp_path / "out", ["ms3"], progress=False)
    report = export_avsbench(raw, tmp_path / "out", ["ms3"], on_error="skip", progress=False).subsets["ms3"]
    assert report.metadata_rows == 7 and report.written == SPLIT_COUNTS
    assert [(row.line, row.rule, row.file) for row in report.skipped] == [
        (8, "duplicate-row", "Multi-sources/ms3_meta_data.csv")
    ]
    reader = AVSBenchReader(raw, "ms3", on_error="skip")
    _check_export(
        tmp_path / "out",
        "ms3",
        {split: [r.video_id for r in reader.records(split)] for split in ("train", "val", "test")},
    )


def test_video_listed_in_two_splits_is_left_out_of_both(copy_subset, tmp_path):
    raw, subset_dir = copy_subset("s4")
    rows = _csv_rows(subset_dir, "s4")
    name, start, category, _ = rows[2]
    _append_rows(subset_dir, "s4", [[name, start, category, "test"]])
    with pytest.raises(
        AVSBenchValidationError,
        match=rf"line 8 \(video '{name}'\) lists the video again as split 'test', category '{category}'; line 3 has split 'train'",
    ):
        export_avsbench(raw, tmp_path / "out", ["s4"], progress=False)
    report = export_avsbench(raw, tmp_path / "out", ["s4"], on_error="skip", progress=False).subsets["s4"]
    assert report.metadata_rows == 7 and report.written == {**SPLIT_COUNTS, "train": 3}
    assert sorted((row.line, row.rule) for row in report.skipped) == [
        (3, "duplicate-row"),
        (8, "duplicate-row"),
    ]
    loaded = [datasets.load_dataset(str(tmp_path / "out"), "s4", split=s)["video_id"] for s in SPLIT_COUNTS]
    assert name not in [video for ids in loaded for video in ids]


@pytest.mark.parametrize("subset", ["s4", "ms3", "avss"])
def test_videos_on_disk_in_no_metadata_row_are_reported(subset, copy_subset, tmp_path):
    raw, subset_dir = copy_subset(subset)
    record = _train_record(subset_dir, subset)
    # A hand-edited metadata file that lost the row of line 3; the video is still on disk.
    rows = _csv_rows(subset_dir, subset)
    with open(subset_dir / CSV_NAMES[subset], "w", newline="") as handle:
        csv.writer(handle).writerows(rows[:2] + rows[3:])
    report = export_avsbench(raw, tmp_path / "out", [subset], progress=False)
    frames_folder = frame_paths(subset_dir, subset, record)[0].parent
    video_folder = frames_folder.parent if subset == "avss" else frames_folder
    assert report.subsets[subset].unlisted == [video_folder.relative_to(raw).as_posix()]
    assert (
        report.written[subset] == {**SPLIT_COUNTS, "train": 3} and report.subsets[subset].metadata_rows == 5
    )
    summary = report.summary_table()
    assert f"{subset}: 1 video folder(s) on disk are in no metadata row and were not exported" in summary
    assert video_folder.relative_to(raw).as_posix() in (tmp_path / "out" / REPORT_MARKDOWN).read_text()


@pytest.mark.parametrize(
    "row, problem",
    [
        (
            ["ghost_video", 0, "synthetic-chirp", "training"],
            "has the unknown split 'training' (expected one of train, val, test)",
        ),
        (["odd_video", 0, "kazoo_solo", "test"], "has the unknown category 'kazoo_solo'"),
        (["", 0, "synthetic-chirp", "test"], "has an empty video id"),
        (["short_row", "test"], "has 2 fields, the header has 4"),
    ],
)
def test_bad_metadata_row(row, problem, copy_subset, tmp_path):
    raw, subset_dir = copy_subset("s4")
    _append_rows(subset_dir, "s4", [row])
    with pytest.raises(AVSBenchValidationError) as error:
        export_avsbench(raw, tmp_path / "out", ["s4"], progress=False)
    assert error.value.rule == "metadata-row" and problem in str(error.value)
    assert str(error.value).endswith(
        "pass on_error='skip' (prepare-avsbench --on-error skip) to leave out such videos and list them in a report"
    )
    assert str(error.value).startswith(f"{subset_dir / 's4_meta_data.csv'}: line 8")
    report = export_avsbench(raw, tmp_path / "out", ["s4"], on_error="skip", progress=False).subsets["s4"]
    assert report.metadata_rows == 7 and report.written == SPLIT_COUNTS
    [skipped] = report.skipped
    assert skipped.line == 8 and skipped.rule == "metadata-row" and problem in skipped.reason


def test_avss_unknown_label_set_and_label_index(copy_subset, tmp_path):
    raw, subset_dir = copy_subset("avss")
    _append_rows(subset_dir, "avss", [["clip_x", "train", "v3"]])
    with pytest.raises(AVSBenchValidationError, match="has the unknown label set 'v3'"):
        AVSBenchReader(raw, "avss")
    assert [row.video_id for row in AVSBenchReader(raw, "avss", on_error="skip").skipped] == ["clip_x"]
    label_index = json.loads((subset_dir / "label2idx.json").read_text())
    label_index["accordion"], label_index["airplane"] = label_index["airplane"], label_index["accordion"]
    (subset_dir / "label2idx.json").write_text(json.dumps(label_index))
    with pytest.raises(
        AVSBenchValidationError, match=r"label2idx.json: does not list the 71 AVSS classes.*rule label-index"
    ):
        AVSBenchReader(raw, "avss", on_error="skip")
    (subset_dir / "label2idx.json").write_text("{not json")
    with pytest.raises(
        AVSBenchValidationError, match=r"label2idx.json: is not a JSON object of class names to ids"
    ):
        AVSBenchReader(raw, "avss", on_error="skip")


@pytest.mark.parametrize(
    "rewrite, rule, pattern",
    [
        (
            lambda text: text.replace("split", "fold"),
            "metadata-columns",
            r"lacks the column\(s\) \['split'\]",
        ),
        (lambda text: text.splitlines()[0] + "\n", "metadata-empty", "has no video rows"),
        (
            lambda text: "\n".join(line for line in text.splitlines() if not line.endswith(",test")) + "\n",
            "empty-split",
            "lists no usable videos for split 'test'",
        ),
    ],
)
def test_fatal_metadata_problems_stop_even_when_skipping(rewrite, rule, pattern, copy_subset, tmp_path):
    raw, subset_dir = copy_subset("ms3")
    path = subset_dir / "ms3_meta_data.csv"
    path.write_text(rewrite(path.read_text()))
    with pytest.raises(AVSBenchValidationError) as error:
        export_avsbench(raw, tmp_path / "out", ["ms3"], on_error="skip", progress=False)
    assert error.value.rule == rule and str(error.value).startswith(f"{path}: ")
    assert re.search(pattern, str(error.value)) and "--on-error" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_metadata_encoding_and_byte_order_mark(copy_subset, tmp_path):
    raw, subset_dir = copy_subset("avss")
    path = subset_dir / "metadata.csv"
    text = path.read_text()
    # Saved by a spreadsheet program: a UTF-8 byte-order mark before the header is fine.
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert sum(len(AVSBenchReader(raw, "avss").records(s)) for s in ("train", "val", "test")) == 6
    path.write_bytes(text.encode() + "caf\u00e9,train,v1s\n".encode("latin-1"))
    with pytest.raises(
        AVSBenchValidationError, match=r"metadata.csv: is not UTF-8 text .*rule metadata-encoding"
    ):
        AVSBenchReader(raw, "avss")


def test_every_video_of_a_split_skipped_stops_the_export(copy_subset, tmp_path):
    raw, subset_dir = copy_subset("s4")
    test_video = AVSBenchReader(raw, "s4").records("test")[0]
    _rewrite_grey(mask_paths(subset_dir, "s4", test_video)[2], (0, 7))
    with pytest.raises(
        AVSBenchValidationError, match=r"every video of split 'test' was skipped \(1 mask-not-binary\)"
    ):
        export_avsbench(raw, tmp_path / "out", ["s4"], on_error="skip", progress=False)
    assert not (tmp_path / "out").exists()


def test_skips_in_several_subsets_are_counted_per_config_and_split(pristine, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(pristine, raw)
    s4_train = AVSBenchReader(raw, "s4").records("train")
    grey_0_100_mask(raw / "Single-source", s4_train[0])
    wav_truncated_mid_file(raw / "Single-source", s4_train[2])
    avss_rows = _csv_rows(raw / "AVSS", "avss")
    _append_rows(raw / "AVSS", "avss", [avss_rows[1]])
    report = export_avsbench(raw, tmp_path / "out", on_error="skip", progress=False)
    assert report.written == {"s4": {**SPLIT_COUNTS, "train": 2}, "ms3": SPLIT_COUNTS, "avss": SPLIT_COUNTS}
    assert [[row.rule for row in report.subsets[s].skipped] for s in FOLDERS] == [
        ["mask-not-binary", "wav-truncated"],
        [],
        ["duplicate-row"],
    ]
    for subset in report.subsets.values():
        assert subset.metadata_rows == sum(subset.written.values()) + len(subset.skipped)
    for subset in FOLDERS:
        reader = AVSBenchReader(raw, subset, on_error="skip")
        skipped = {row.video_id for row in report.subsets[subset].skipped if row.rule != "duplicate-row"}
        expected = {
            split: [r.video_id for r in reader.records(split) if r.video_id not in skipped]
            for split in ("train", "val", "test")
        }
        _check_export(tmp_path / "out", subset, expected)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "3 metadata row(s) or video(s) broke a rule and were skipped" in card
    assert "| s4 | 6 | 2 | 1 | 1 | 2 |" in card and "| ms3 | 6 | 4 | 1 | 1 | 0 |" in card
    assert "| avss | 7 | 4 | 1 | 1 | 1 |" in card


@pytest.mark.parametrize("encoding", ["0/1 grey", "1-bit", "palette", "grey RGB", "0/255 grey"])
def test_accepted_mask_encodings_read_the_same(encoding, copy_subset):
    raw, subset_dir = copy_subset("ms3")
    record = _train_record(subset_dir, "ms3")
    path = mask_paths(subset_dir, "ms3", record)[0]
    original = np.asarray(Image.open(path).convert("L"))
    expected = (original == 255).astype(np.uint8)
    assert set(np.unique(original)) == {0, 255} and expected.any()
    if encoding == "0/1 grey":
        Image.fromarray(expected).save(path)
    elif encoding == "1-bit":
        Image.fromarray(original).convert("1").save(path)
    elif encoding == "palette":
        image = Image.fromarray(expected, mode="P")
        image.putpalette([0, 0, 0, 255, 255, 255])
        image.save(path)
    elif encoding == "grey RGB":
        Image.fromarray(original).convert("RGB").save(path)
    assert Image.open(path).mode == {"0/1 grey": "L", "1-bit": "1", "palette": "P", "grey RGB": "RGB"}.get(
        encoding, "L"
    )
    example = AVSBenchReader(raw, "ms3").read_example(record)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(example["masks"][0]["bytes"]))), expected)


def test_decode_binary_mask_alone():
    assert decode_binary_mask(Image.fromarray(np.array([[0, 255]], dtype=np.uint8))).tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="grey levels are 0, 100"):
        decode_binary_mask(Image.fromarray(np.array([[0, 100]], dtype=np.uint8)))
    with pytest.raises(ValueError, match="PIL mode 'F'"):
        decode_binary_mask(Image.fromarray(np.zeros((2, 2), dtype=np.float32)))


def test_audio_within_one_second_is_accepted(copy_subset):
    raw, subset_dir = copy_subset("s4")
    record = _train_record(subset_dir, "s4")
    path = wav_path(subset_dir, "s4", record)
    _rewrite_wav(path, lambda samples, rate: samples[: int(4.2 * rate)])
    example = AVSBenchReader(raw, "s4").read_example(record)
    assert example["audio"]["bytes"] == path.read_bytes()


def test_each_image_is_decoded_once_from_reader_to_batch(copy_subset, monkeypatch):
    raw, subset_dir = copy_subset("s4")
    reader = AVSBenchReader(raw, "s4")
    record = reader.records("test")[0]
    files = len(frame_paths(subset_dir, "s4", record)) + len(mask_paths(subset_dir, "s4", record))
    opened = []
    original_open = Image.open

    def counting_open(*args, **kwargs):
        opened.append(args[0])
        return original_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    example = reader.read_example(record, decode_images=True)
    batch = AVSBenchCollator("s4", image_size=32)([example])
    assert len(opened) == files == 10
    assert batch["pixel_values"].shape == (1, 5, 3, 32, 32) and batch["labels"].sum() > 0
    # The same batch as from the stored (undecoded) example.
    monkeypatch.setattr(Image, "open", original_open)
    stored = AVSBenchCollator("s4", image_size=32)([reader.read_example(record)])
    assert all((batch[key] == stored[key]).all() for key in batch)


def test_cli_skip_prints_the_summary_and_saves_the_report(copy_subset, tmp_path, capsys):
    raw, subset_dir = copy_subset("ms3")
    record = _train_record(subset_dir, "ms3")
    wav_cut_to_1_3_of_5_seconds(subset_dir, record)
    out = tmp_path / "out"
    # Without --subset the subsets found in RAW_DIR are exported: here MS3 alone.
    assert cli_main(["prepare-avsbench", str(raw), str(out), "--on-error", "skip"]) == 0
    printed = capsys.readouterr().out
    assert "| ms3 | 6 | 3 | 1 | 1 | 1 |" in printed and "| ms3 | audio-length | 1 |" in printed
    assert f"each with its reason in {out / REPORT_MARKDOWN}" in printed
    assert record.video_id in (out / REPORT_MARKDOWN).read_text()
    assert datasets.load_dataset(str(out), "ms3", split="train").num_rows == 3
    assert list(PreparationReport.from_json((out / REPORT_JSON).read_text()).subsets) == ["ms3"]
    capsys.readouterr()
    assert cli_main(["prepare-avsbench", str(tmp_path), str(tmp_path / "out2")]) == 2
    assert f"{tmp_path} holds no AVSBench subset" in capsys.readouterr().err
