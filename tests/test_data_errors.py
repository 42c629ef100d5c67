"""Reader arguments, the opt-in log-mel pickles and the CLI round trip (corrupted files: test_data_validation.py)."""

import os
import pickle

import pytest
import torch

from avs_models.cli import main as cli_main
from avs_models.data import (
    AVSBenchReader,
    AVSBenchValidationError,
    export_avsbench,
    load_official_log_mel,
    make_synthetic_avsbench,
)
from avs_models.data.avsbench import log_mel_path


@pytest.fixture
def s4_dir(tmp_path):
    return make_synthetic_avsbench(tmp_path, "s4", 3, seed=1, image_size=40)


def _first(reader):
    return reader.records("train")[0]


def test_missing_metadata_and_bad_arguments(tmp_path, s4_dir):
    with pytest.raises(FileNotFoundError, match="ms3_meta_data.csv"):
        AVSBenchReader(tmp_path / "nowhere", "ms3")
    with pytest.raises(ValueError, match="subset"):
        AVSBenchReader(s4_dir, "s5")
    with pytest.raises(ValueError, match="split"):
        AVSBenchReader(s4_dir, "s4").records("validation")
    with pytest.raises(ValueError, match="on_error must be one of"):
        AVSBenchReader(s4_dir, "s4", on_error="warn")
    with pytest.raises(ValueError, match="on_error must be one of"):
        export_avsbench(s4_dir, tmp_path / "out", ["s4"], on_error="ignore")


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
    # Read through the reader, the same problems name the video and the rule.
    with pytest.raises(
        AVSBenchValidationError, match=r"unusable official log-mel file: expected .*rule log-mel; video"
    ):
        AVSBenchReader(s4_dir, "s4", load_official_log_mel=True).read_example(record)
    path.unlink()
    with pytest.raises(FileNotFoundError, match=r"missing official log-mel file \(rule missing-file"):
        AVSBenchReader(s4_dir, "s4", load_official_log_mel=True).read_example(record)


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
    assert "| ms3 | 3 | 1 | 1 | 1 | 0 |" in capsys.readouterr().out
    assert datasets.load_dataset(str(tmp_path / "out"), "ms3", split="test").num_rows == 1
