"""`avs-models push` and training's `push_to_hub`: what `huggingface_hub.HfApi.upload_folder` sends.

No test reaches the network. `HubRecorder` replaces only the Hub's server calls of `HfApi` (create
the repository or branch, validate the card's YAML, create the commit) with recorders, so the real
`upload_folder` still selects the files and builds the commit's operations; the tests compare that
commit with what `push --dry-run` printed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard, constants
from test_pipeline_predict import save_tiny_pcmanet
from test_training import tiny_trainer

from avs_models.cli import main as cli_main
from avs_models.data import make_synthetic_avsbench
from avs_models.hub import CARD_NAME, write_model_card


class HubRecorder:
    """The Hub's server side of `HfApi`, recording what it is sent."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[str, dict]] = []
        # The single-commit upload (the other, hf_xet's pipeline, talks to its own servers).
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        for name in ("create_repo", "create_branch", "create_commit"):
            monkeypatch.setattr(HfApi, name, self._recorder(name))
        monkeypatch.setattr(HfApi, "_validate_yaml", self._recorder("validate_yaml"))

    def _recorder(self, name: str):
        def record(api, *args, **kwargs):
            self.calls.append((name, {"args": args, **kwargs}))

        return record

    def named(self, name: str) -> list[dict]:
        return [kwargs for call, kwargs in self.calls if call == name]

    def committed_files(self) -> dict[str, bytes]:
        (commit,) = self.named("create_commit")
        return {
            operation.path_in_repo: Path(operation.path_or_fileobj).read_bytes()
            for operation in commit["operations"]
        }


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A saved model with its card, plus what a folder may also hold and must not be uploaded."""
    folder = tmp_path / "pcmanet-tiny"
    save_tiny_pcmanet(folder)
    write_model_card(folder)
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "pytorch_model.bin").write_bytes(b"pickled weights")
    (folder / "notes").mkdir()
    (folder / "notes" / "training.txt").write_text("trained on the synthetic set\n")
    return folder


def dry_run_lines(capsys, *arguments: str) -> tuple[list[str], list[str], str]:
    """The files `push --dry-run` lists, those it says it leaves out, and the card it prints."""
    assert cli_main(["push", *arguments, "--dry-run"]) == 0
    out = capsys.readouterr().out
    listing, card = out.split("\n--- ", 1)
    lines = [line.strip() for line in listing.splitlines()[1:]]
    files = [line for line in lines if not line.startswith("left out: ")]
    left_out = [line.removeprefix("left out: ") for line in lines if line.startswith("left out: ")]
    return files, left_out, card.split(" ---\n", 1)[1]


def test_dry_run_lists_exactly_what_upload_folder_sends(model_dir, capsys, monkeypatch):
    card_before = (model_dir / CARD_NAME).read_text()
    files, left_out, card = dry_run_lines(capsys, str(model_dir), "me/pcmanet-tiny")
    assert (model_dir / CARD_NAME).read_text() == card_before  # a dry run writes nothing
    assert "pytorch_model.bin" in left_out and ".git/HEAD" in left_out
    assert {
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "README.md",
        "notes/training.txt",
    } <= set(files)
    assert any(name.endswith(".py") for name in files)  # the model's code: it loads without avs-models

    hub = HubRecorder(monkeypatch)
    arguments = ["push", str(model_dir), "me/pcmanet-tiny", "--private", "--revision", "dev"]
    assert cli_main([*arguments, "--commit-message", "first weights"]) == 0
    committed = hub.committed_files()
    assert sorted(committed) == files
    assert committed["README.md"].decode() == card  # the card printed is the card sent
    (create_repo,) = hub.named("create_repo")
    assert create_repo["args"] == ("me/pcmanet-tiny",) and create_repo["private"] is True
    assert hub.named("create_branch")[0]["branch"] == "dev"
    (commit,) = hub.named("create_commit")
    assert (commit["repo_id"], commit["revision"], commit["commit_message"]) == (
        "me/pcmanet-tiny",
        "dev",
        "first weights",
    )
    # The card's snippets now load the repository.
    assert 'model="me/pcmanet-tiny"' in (model_dir / CARD_NAME).read_text()
    assert ModelCard.load(model_dir / CARD_NAME).data.library_name == "transformers"


def test_push_defaults(model_dir, monkeypatch):
    hub = HubRecorder(monkeypatch)
    assert cli_main(["push", str(model_dir), "me/pcmanet-tiny"]) == 0
    assert hub.named("create_repo")[0]["private"] is None  # the account's default visibility
    assert hub.named("create_branch") == []
    (commit,) = hub.named("create_commit")
    assert commit["revision"] is None and commit["commit_message"] == "Upload pcmanet-tiny with avs-models"


def test_push_errors_are_one_line(tmp_path, capsys, monkeypatch):
    hub = HubRecorder(monkeypatch)
    (tmp_path / "empty").mkdir()
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text('{"model_type": "pcmanet"}')
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"pickled weights")
    expected = {
        "missing": "model folder not found: {folder} (pass a folder written by save_pretrained or avs-models train)",
        "empty": "{folder} has no config.json: pass a folder written by save_pretrained",
        "pickled": "{folder} holds no safetensors weights: save the model with save_pretrained first",
    }
    for name, message in expected.items():
        folder = tmp_path / name
        assert cli_main(["push", str(folder), "me/model", "--dry-run"]) == 2
        assert capsys.readouterr().err == f"avs-models push: error: {message.format(folder=folder)}\n"
    assert hub.calls == []


def test_training_push_to_hub_sends_the_final_folder_with_its_card(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    make_synthetic_avsbench(data_dir, "s4", 6, seed=0, image_size=32)
    hub = HubRecorder(monkeypatch)
    tiny_trainer(tmp_path, data_dir, num_epochs=1, push_to_hub="me/trained-tiny").train()
    final = tmp_path / "out" / "final"
    committed = hub.committed_files()
    assert {"config.json", "model.safetensors", "processor_config.json", "README.md"} <= set(committed)
    assert set(committed) == {
        path.relative_to(final).as_posix() for path in final.rglob("*") if path.is_file()
    }
    card = committed["README.md"].decode()
    assert "Trained with `avs-models train` on synthetic AVSBench-layout clips" in card
    assert 'AutoModel.from_pretrained("me/trained-tiny"' in card
    # The best model gets its card too.
    best = ModelCard.load(tmp_path / "out" / "best" / CARD_NAME)
    assert best.data.datasets == ["synthetic-avsbench"] and "avsbench-s4" in best.data.tags
