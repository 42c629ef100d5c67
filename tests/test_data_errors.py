"""Broken AVSBench folders give errors that name the file and the video."""

import csv
import json
import logging
import os
import pickle

import pytest
import torch

from avs_models.cli import main as cli_main
from avs_models.data import (
    AVSBenchMetadataError,
    AVSBenchReader,
    load_official_log_mel,
    make_synthetic_avsbench,
)
from avs_models.data.avsbench import frame_paths, log_mel_path, mask_paths, wav_path


@pytest.fixture
def s4_dir(tmp_path):
    return make_synthetic_avsbench(tmp_path, "s4", 3, seed=1, image_size=40)


def _first(reader):
    return reader.records("train")[0]


def test_corrupt_frame_names_file_and_video(s4_dir):
    reader = AVSBenchReader(s4_dir, "s4")
    record = _first(reader)
    path = frame_paths(s4_dir, "s4", record)[2]
    path.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="unreadable frame") as error:
        reader.read_example(record)
    assert str(path) in str(error.value) and record.video_id in str(error.value)


def test_missing_mask_names_file_and_video(s4_dir):
    reader = AVSBenchReader(s4_dir, "s4")
    record = _first(reader)
    path = mask_paths(s4_dir, "s4", record)[0]
    path.unlink()
    with pytest.raises(FileNotFoundError, match="missing ground-truth mask") as error:
        list(reader.iter_examples("train"))
    assert str(path) in str(error.value) and record.video_id in str(error.value)


def test_deleted_wav_names_file_and_video(s4_dir):
    reader = AVSBenchReader(s4_dir, "s4")
    record = _first(reader)
    path = wav_path(s4_dir, "s4", record)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="missing wav") as error:
        reader.read_example(record)
    assert str(path) in str(error.value) and record.video_id in str(error.value)


def test_unreadable_wav(s4_dir):
    reader = AVSBenchReader(s4_dir, "s4")
    record = _first(reader)
    wav_path(s4_dir, "s4", record).write_bytes(b"RIFF garbage")
    with pytest.raises(
        ValueError, match=f"unreadable wav.*{record.video_id}|{record.video_id}.*unreadable wav"
    ):
        reader.read_example(record)


def _append_row(csv_path, row):
    with open(csv_path, "a", newline="") as handle:
        csv.writer(handle).writerow(row)


def test_bad_metadata_rows_are_reported(s4_dir, caplog):
    csv_path = s4_dir / "s4_meta_data.csv"
    _append_row(csv_path, ["ghost_video", 0, "synthetic-chirp", "training"])
    _append_row(csv_path, ["odd_video", 0, "kazoo_solo", "test"])
    with pytest.raises(AVSBenchMetadataError) as error:
        AVSBenchReader(s4_dir, "s4")
    message = str(error.value)
    assert "line 5 (video 'ghost_video'): unknown split 'training'" in message
    assert "line 6 (video 'odd_video'): unknown category 'kazoo_solo'" in message
    with caplog.at_level(logging.WARNING):
        reader = AVSBenchReader(s4_dir, "s4", on_bad_row="warn")
    assert "ghost_video" in caplog.text and "odd_video" in caplog.text
    assert sum(len(reader.records(split)) for split in ("train", "val", "test")) == 3


def test_unknown_avss_label_set(tmp_path):
    avss_dir = make_synthetic_avsbench(tmp_path, "avss", 1, seed=1, image_size=40)
    _append_row(avss_dir / "metadata.csv", ["clip_x", "train", "v3"])
    with pytest.raises(AVSBenchMetadataError, match="unknown label set 'v3'"):
        AVSBenchReader(avss_dir, "avss")


def test_label_index_must_match_the_avss_classes(tmp_path):
    avss_dir = make_synthetic_avsbench(tmp_path, "avss", 1, seed=1, image_size=40)
    assert AVSBenchReader(avss_dir, "avss").records("train")
    label_index = json.loads((avss_dir / "label2idx.json").read_text())
    label_index["accordion"], label_index["airplane"] = label_index["airplane"], label_index["accordion"]
    (avss_dir / "label2idx.json").write_text(json.dumps(label_index))
    with pytest.raises(ValueError, match="label2idx.json"):
        AVSBenchReader(avss_dir, "avss")


def test_missing_metadata_and_bad_arguments(tmp_path, s4_dir):
    with pytest.raises(FileNotFoundError, match="ms3_meta_data.csv"):
        AVSBenchReader(tmp_path / "nowhere", "ms3")
    with pytest.raises(ValueError, match="subset"):
        AVSBenchReader(s4_dir, "s5")
    with pytest.raises(ValueError, match="split"):
        AVSBenchReader(s4_dir, "s4").records("validation")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_log_mel_pickles_are_opt_in_and_tensor_only(s4_dir, tmp_path):
    reader = AVSBenchReader(s4_dir, "s4")
    record = _first(reader)
    path = log_mel_path(s4_dir, "s4", record)
    path.parent.mkdir(parents=True)
    # Without the opt-in the pickle is never opened, whatever it holds.
    path.write_bytes(pickle.dumps(_Exploit()))
    assert "official_log_mel" not in reader.read_example(record)
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system|nt.system"):
        load_official_log_mel(path)
    log_mel = torch.randn(5, 1, 96, 64)
    path.write_bytes(pickle.dumps(log_mel))
    opted_in = AVSBenchReader(s4_dir, "s4", load_official_log_mel=True).read_example(record)
    assert torch.equal(torch.from_numpy(opted_in["official_log_mel"]), log_mel)
    path.write_bytes(pickle.dumps(torch.zeros(3, 4)))
    with pytest.raises(ValueError, match=r"\[T, 1, 96, 64\]"):
        load_official_log_mel(path)


def test_cli_round_trip(tmp_path, capsys):
    import datasets

    assert (
        cli_main(
            [
                "make-synthetic",
                str(tmp_path / "raw"),
                "--subset",
                "ms3",
                "--videos",
                "3",
                "--image-size",
                "40",
            ]
        )
        == 0
    )
    assert (
        cli_main(["prepare-avsbench", str(tmp_path / "raw"), str(tmp_path / "out"), "--subset", "ms3"]) == 0
    )
    assert "ms3: train 1, validation 1, test 1" in capsys.readouterr().out
    assert datasets.load_dataset(str(tmp_path / "out"), "ms3", split="test").num_rows == 1
