"""Training: config files and presets, a real 2-process `accelerate launch` run, kill and resume."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_training import TINY_AVSEGFORMER, TINY_C3N, TINY_MODEL

from avs_models import AutoModelForAudioVisualSegmentation, C3NForAudioVisualSegmentation
from avs_models.cli import main
from avs_models.data import AVSBenchCollator, export_avsbench, make_synthetic_avsbench
from avs_models.processing import AudioVisualProcessor
from avs_models.training import PRESETS, Trainer, load_training_config
from avs_models.training.trainer import CHECKPOINTS, LATEST, AVSBenchSplit


def write_tiny_config(directory: Path, **overrides) -> Path:
    config = {
        "subset": "s4",
        "model": TINY_MODEL,
        "optimizer": {"name": "adam", "learning_rate": 1e-3},
        "batch_size": 1,
        "num_epochs": 3,
        "image_size": 32,
        "logging_steps": 1,
        "augmentation": {"flip_probability": 0.5},
    }
    config.update(overrides)
    path = directory / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_avsbench(root, "s4", 6, seed=0, image_size=32)
    return root


def subprocess_env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def run_to_completion(command: list[str]) -> subprocess.CompletedProcess:
    """Run a training command in its own process and fail with its error output if it fails."""
    completed = subprocess.run(command, check=False, capture_output=True, env=subprocess_env(), timeout=300)
    # Decoded without universal newlines, so that a progress bar's carriage returns stay as printed.
    stdout, stderr = completed.stdout.decode(), completed.stderr.decode()
    assert completed.returncode == 0, stderr[-3000:]
    return subprocess.CompletedProcess(command, completed.returncode, stdout, stderr)


# Import-time notices of an installed optional package (torchao built for another torch), printed
# by every Python process that imports Transformers here: not the training's output.
IMPORT_NOTICES = ("Failed to load", "_pytree.py")


def output_lines(completed: subprocess.CompletedProcess) -> list[str]:
    """The lines a user sees (a progress bar redrawn with carriage returns is one line)."""
    lines = (completed.stdout + "\n" + completed.stderr).split("\n")
    return [line for line in lines if line.strip() and not any(notice in line for notice in IMPORT_NOTICES)]


# AVSegFormer's presets (AdamW, 2e-5, 512x512 frames) are checked in tests/test_avsegformer.py.
@pytest.mark.parametrize("preset", [name for name in PRESETS if not name.startswith("avsegformer")])
def test_presets_load_with_paper_settings(preset):
    config = load_training_config(preset)
    expected = {
        "pcmanet_s4": (4, 15),
        "pcmanet_ms3": (4, 30),
        "pcmanet_avss": (4, 60),
        "c3n_s4": (8, 20),
        "c3n_ms3": (4, 60),
        "tpavi_s4": (4, 15),
        "tpavi_ms3": (4, 30),
        "tpavi_avss": (4, 60),
    }[preset]
    assert (config.batch_size, config.num_epochs) == expected
    assert config.optimizer == {"name": "adam", "learning_rate": 1e-4}
    assert (config.augmentation is not None) == preset.startswith("c3n")
    if preset.startswith("c3n"):
        assert config.model["config"]["audio_config"]["model_type"] == "vggish"
    assert config.save_total_limit == 2
    # the official PVT-v2-b5 trains with stochastic depth 0.1; PCMANet's presets use ResNet-50
    assert config.drop_path_rate == (0.1 if preset.startswith(("c3n", "tpavi")) else None)


def test_overrides_and_config_errors(tmp_path):
    config = load_training_config(
        "pcmanet_s4", ["optimizer.learning_rate=1e-3", "num_epochs=2", "data_dir=x"]
    )
    assert config.optimizer["learning_rate"] == 1e-3 and config.num_epochs == 2 and config.data_dir == "x"
    with pytest.raises(FileNotFoundError, match="neither a file nor a preset"):
        load_training_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match="unknown training config key"):
        load_training_config("pcmanet_s4", ["epochs=3"])
    with pytest.raises(ValueError, match="key=value"):
        load_training_config("pcmanet_s4", ["num_epochs"])
    with pytest.raises(ValueError, match="subset"):
        load_training_config("pcmanet_s4", ["subset=s5"])
    with pytest.raises(ValueError, match="batch_size"):
        load_training_config("pcmanet_s4", ["batch_size=0"])
    # Values of the wrong type name their key instead of failing inside int() or being rounded.
    for override, message in [
        ("batch_size=two", "batch_size must be a positive integer, got 'two'"),
        ("batch_size=2.5", "batch_size must be a positive integer, got 2.5"),
        ("num_epochs=true", "num_epochs must be a positive integer, got True"),
        (
            "checkpoint_steps=often",
            "checkpoint_steps must be 0 (only each epoch) or a positive integer, got 'often'",
        ),
        ("seed=-1", "seed must be an integer of 0 or more, got -1"),
        ("optimizer.learning_rate=fast", "optimizer.learning_rate must be a positive number, got 'fast'"),
        ("optimizer.learning_rate=0", "optimizer.learning_rate must be a positive number, got 0"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            load_training_config("pcmanet_s4", [override])
    with pytest.raises(ValueError, match="optimizer.name"):
        load_training_config("pcmanet_s4", ["optimizer.name=lamb"])
    # YAML reads a bare `no` as false: it still means no mixed precision.
    assert load_training_config("pcmanet_s4", ["mixed_precision=no"]).mixed_precision == "no"
    with pytest.raises(ValueError, match="mixed_precision"):
        load_training_config("pcmanet_s4", ["mixed_precision=fp32"])
    with pytest.raises(ValueError, match="data_dir is not set"):
        Trainer(load_training_config("pcmanet_s4"))
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(TypeError, match="mapping"):
        load_training_config(str(tmp_path / "list.json"))


def test_split_reader_errors(tmp_path, data_dir):
    with pytest.raises(FileNotFoundError, match="data_dir"):
        AVSBenchSplit(tmp_path / "nothing", "s4", "train")
    assert len(AVSBenchSplit(data_dir, "s4", "train")) == 4


def test_two_process_accelerate_launch_trains_in_sync(tmp_path, data_dir):
    config = write_tiny_config(tmp_path)
    output = tmp_path / "out"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--num_machines", "1",
        "-m", "avs_models.train", str(config), f"data_dir={data_dir}", f"output_dir={output}",
    ]  # fmt: skip
    lines = output_lines(run_to_completion(command))
    # Quiet by default: one progress bar (main process) and one closing line; no Accelerate INFO
    # lines, no "Writing model shards" bars, no per-process duplicates, no DDP grad-stride warnings.
    assert len([line for line in lines if "train:" in line]) == 1, lines
    assert sum("finished" in line for line in lines) == 1 and lines[0].startswith("finished at step 6;")
    assert len(lines) == 2, lines
    checksums = {(output / f"weights_checksum_process{rank}.txt").read_text() for rank in (0, 1)}
    assert len(checksums) == 1, "the two processes ended with different weights"
    state = json.loads((output / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["history"] if "loss" in entry]
    # 4 training clips over 2 processes with batch 1: 2 steps per epoch
    assert state["global_step"] == 6 and len(losses) == 6
    assert sum(losses[-2:]) < sum(losses[:2])
    assert all(len(entry["kept_token_ratios"]) == 3 for entry in state["history"] if "loss" in entry)
    assert any("val_miou" in entry for entry in state["history"])
    assert (output / "final" / "model.safetensors").is_file() and (output / "best" / "config.json").is_file()
    processor = AudioVisualProcessor.from_pretrained(output / "final")
    assert processor.image_processor.size == {"height": 32, "width": 32} and processor.num_frames == 5


def train_command(config: Path, data_dir: Path, output: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "avs_models.train",
        str(config),
        f"data_dir={data_dir}",
        f"output_dir={output}",
        *extra,
    ]


def test_killed_run_resumes_to_the_same_weights(tmp_path, data_dir):
    config = write_tiny_config(tmp_path, checkpoint_steps=3, num_epochs=3)
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    run_to_completion(train_command(config, data_dir, reference))

    process = subprocess.Popen(
        train_command(config, data_dir, interrupted),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=subprocess_env(),
    )
    latest = interrupted / CHECKPOINTS / LATEST
    deadline = time.monotonic() + 240
    while not latest.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL, "the run ended before it could be killed"
    assert latest.read_text() == "step-3", "killed after the first checkpoint (step 3, mid-epoch 1)"
    assert not (interrupted / "final").exists()

    run_to_completion(train_command(config, data_dir, interrupted, "--resume"))
    expected = load_file(reference / "final" / "model.safetensors")
    actual = load_file(interrupted / "final" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    # the logged losses and validation scores match too (speeds aside)
    scores = ("step", "loss", "stage_losses", "kept_token_ratios", "val_miou", "val_fscore")
    logged = [
        [
            {key: entry.get(key) for key in scores}
            for entry in json.loads((run / "trainer_state.json").read_text())["history"]
        ]
        for run in (reference, interrupted)
    ]
    assert logged[0] == logged[1]


def test_cli_train_in_process_with_a_json_config(tmp_path, data_dir):
    config = {"subset": "s4", "model": TINY_MODEL, "num_epochs": 1, "image_size": 32, "batch_size": 2}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(config))
    output = tmp_path / "out"
    assert (
        main(["train", str(path), f"data_dir={data_dir}", f"output_dir={output}", "validation_split=null"])
        == 0
    )
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["best_miou"] is None
    assert (output / "checkpoints" / "latest").read_text() == "epoch-1"
    assert not (output / "best").exists() and (output / "final" / "model.safetensors").is_file()


def test_c3n_trains_with_its_frozen_audio_encoder_and_saves_a_usable_model(tmp_path, data_dir):
    config = load_training_config(
        str(write_tiny_config(tmp_path, model=TINY_C3N, num_epochs=1, batch_size=2)),
        [f"data_dir={data_dir}", f"output_dir={tmp_path / 'out'}", "validation_split=test"],
    )
    trainer = Trainer(config)
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    state = trainer.train()
    assert state["best_miou"] is not None
    final = AutoModelForAudioVisualSegmentation.from_pretrained(tmp_path / "out" / "final")
    assert isinstance(final, C3NForAudioVisualSegmentation)
    trained = final.state_dict()
    frozen = [k for k in initial if k.startswith(("audio_encoder.", "visual_classifier."))]
    assert frozen and all(torch.equal(trained[k], initial[k]) for k in frozen)
    assert not torch.equal(trained["head.classifier.weight"], initial["head.classifier.weight"])
    processor = AudioVisualProcessor.from_pretrained(tmp_path / "out" / "final")
    assert processor.feature_extractor.model_input_names == ["input_features"]


def test_bf16_mixed_precision_with_tensorboard_logging(tmp_path, data_dir):
    # Accelerate keeps one state per process, so each precision runs in its own process, as users run it.
    config = write_tiny_config(tmp_path, num_epochs=1, batch_size=2)
    losses = {}
    for precision in ("no", "bf16"):
        output = tmp_path / precision
        overrides = (f"mixed_precision={precision}", "report_to=tensorboard", "validation_split=test")
        run_to_completion(train_command(config, data_dir, output, *overrides))
        state = json.loads((output / "trainer_state.json").read_text())
        losses[precision] = [entry["loss"] for entry in state["history"] if "loss" in entry]
    assert len(losses["bf16"]) == 2 and all(math.isfinite(loss) for loss in losses["bf16"])
    # bf16 autocast really ran: the same seeded run gives close but not identical losses.
    assert losses["bf16"] != losses["no"]
    # Same weights at the first step: close losses. (After one Adam step, whose first update is
    # nearly the sign of each gradient, bf16 rounding can flip small gradients and move later losses.)
    assert losses["bf16"][0] == pytest.approx(losses["no"][0], rel=0.05)
    final = AutoModelForAudioVisualSegmentation.from_pretrained(tmp_path / "bf16" / "final")
    assert {parameter.dtype for parameter in final.parameters()} == {torch.float32}

    runs = {events.parent for events in (tmp_path / "bf16" / "logs").rglob("events.out.tfevents.*")}
    accumulators = [EventAccumulator(str(run)).Reload() for run in runs]
    accumulator = next((acc for acc in accumulators if "loss" in acc.Tags()["scalars"]), None)
    assert accumulator is not None, f"no TensorBoard run with the training loss in {sorted(runs)}"
    assert [event.value for event in accumulator.Scalars("loss")] == pytest.approx(losses["bf16"], rel=1e-6)
    assert "val_miou" in accumulator.Tags()["scalars"]


def test_exported_dataset_reads_like_the_official_layout(tmp_path, data_dir):
    exported = tmp_path / "exported"
    export_avsbench(data_dir, exported, ["s4"], progress=False)
    for split in ("train", "val", "test"):
        official, parquet = AVSBenchSplit(data_dir, "s4", split), AVSBenchSplit(exported, "s4", split)
        assert len(official) == len(parquet)
    collator = AVSBenchCollator("s4", 32)
    official, parquet = AVSBenchSplit(data_dir, "s4", "train"), AVSBenchSplit(exported, "s4", "train")
    by_id = {parquet[index]["video_id"]: index for index in range(len(parquet))}
    first = official[0]
    expected, actual = collator([first]), collator([parquet[by_id[first["video_id"]]]])
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def test_verbose_run_logs_steps_and_library_messages(tmp_path, data_dir):
    config = write_tiny_config(tmp_path, num_epochs=1, batch_size=2)
    quiet = output_lines(run_to_completion(train_command(config, data_dir, tmp_path / "quiet")))
    verbose = output_lines(run_to_completion(train_command(config, data_dir, tmp_path / "loud", "--verbose")))
    assert not any("INFO" in line for line in quiet) and len(quiet) == 2, quiet
    assert any("[process 0] INFO avs_models.training.trainer: step 1:" in line for line in verbose)
    assert any("INFO accelerate" in line for line in verbose)  # e.g. "Saving current state to ..."
    assert not any("Writing model shards" in line for line in verbose)


def tiny_trainer(tmp_path, data_dir, output="out", **overrides) -> Trainer:
    values = {"num_epochs": 1, "batch_size": 2, "num_workers": 0, **overrides}
    return Trainer(
        load_training_config(
            str(write_tiny_config(tmp_path, **values)),
            [f"data_dir={data_dir}", f"output_dir={tmp_path / output}"],
        )
    )


def test_save_total_limit_keeps_the_newest_and_the_best(tmp_path, data_dir):
    stale = tmp_path / "out" / CHECKPOINTS / ".tmp-step-99"  # left by a killed run
    stale.mkdir(parents=True)
    state = tiny_trainer(tmp_path, data_dir, num_epochs=3, checkpoint_steps=1, save_total_limit=2).train()
    root = tmp_path / "out" / CHECKPOINTS
    kept = sorted(path.name for path in root.iterdir() if path.is_dir())
    # 2 steps per epoch, a checkpoint after every step and epoch: step-1 ... step-6, epoch-1 ... epoch-3
    newest = {"step-6", "epoch-3"}
    assert state["best_checkpoint"] in {"epoch-1", "epoch-2", "epoch-3"}
    assert set(kept) == newest | {state["best_checkpoint"]}, kept
    assert (root / LATEST).read_text() == "epoch-3"
    every = tiny_trainer(
        tmp_path, data_dir, "all", num_epochs=3, checkpoint_steps=1, save_total_limit=None
    ).train()
    assert len([path for path in (tmp_path / "all" / CHECKPOINTS).iterdir() if path.is_dir()]) == 9
    assert every["best_checkpoint"] == state["best_checkpoint"]
    with pytest.raises(ValueError, match="save_total_limit must be a positive integer"):
        load_training_config("pcmanet_s4", ["save_total_limit=0"])


def test_resume_refuses_a_changed_configuration_unless_told(tmp_path, data_dir):
    tiny_trainer(tmp_path, data_dir).train()
    # compatible changes: more epochs, other logging and loading settings
    extended = tiny_trainer(tmp_path, data_dir, num_epochs=2, logging_steps=5, num_workers=1)
    assert extended.train(resume=True)["global_step"] == 4
    changed = tiny_trainer(tmp_path, data_dir, num_epochs=3, batch_size=1, seed=7)
    with pytest.raises(ValueError, match="differs from the checkpoint's in 2 setting") as error:
        changed.train(resume=True)
    message = str(error.value)
    assert (
        "batch_size: 2 -> 1" in message and "seed: 0 -> 7" in message and "--resume-ignore-config" in message
    )
    assert "num_epochs" not in message and "logging_steps" not in message
    state = changed.train(resume=True, ignore_config_changes=True)
    assert state["global_step"] == 4 + 4  # epoch 3 with batch 1: 4 steps
    nested = tiny_trainer(tmp_path, data_dir, num_epochs=4, optimizer={"name": "adam", "learning_rate": 0.01})
    with pytest.raises(ValueError, match=r"optimizer.learning_rate: 0.001 -> 0.01"):
        nested.train(resume=True)
    # a checkpoint from before the check: no saved configuration to compare
    latest = tmp_path / "out" / CHECKPOINTS / (tmp_path / "out" / CHECKPOINTS / LATEST).read_text()
    (latest / "training_config.json").unlink()
    with pytest.raises(ValueError, match="holds no training_config.json .* pass --resume-ignore-config"):
        tiny_trainer(tmp_path, data_dir, num_epochs=4).train(resume=True)
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint under"):
        tiny_trainer(tmp_path, data_dir, "fresh").train(resume=True)
    with pytest.raises(ValueError, match="num_workers must be 0"):
        load_training_config("pcmanet_s4", ["num_workers=-1"])


def test_resume_compares_every_key_it_must_and_the_process_count():
    from dataclasses import fields

    from avs_models.training import TrainingConfig
    from avs_models.training.config import RESUME_MAY_CHANGE, RESUME_MUST_MATCH, resume_differences

    names = [item.name for item in fields(TrainingConfig)]
    # every key is decided: a new key must be added to one of the two lists
    assert sorted(RESUME_MUST_MATCH + RESUME_MAY_CHANGE) == sorted(names)
    saved = {**TrainingConfig().to_dict(), "num_processes": 2}
    assert resume_differences(saved, {**saved, "output_dir": "elsewhere", "num_epochs": 99}) == []
    assert resume_differences(saved, {**saved, "num_processes": 1}) == ["num_processes: 2 -> 1"]
    assert resume_differences(saved, {**saved, "augmentation": {"flip_probability": 0.5}}) == [
        "augmentation: None -> {'flip_probability': 0.5}"
    ]


def test_cli_resume_errors_are_one_line(tmp_path, data_dir, capsys):
    assert main(["train", "pcmanet_s4", "--resume-ignore-config"]) == 2
    assert capsys.readouterr().err == (
        "avs-models train: error: --resume-ignore-config only applies with --resume\n"
    )
    config = write_tiny_config(tmp_path, num_epochs=1, batch_size=2, num_workers=0)
    output = tmp_path / "out"
    assert main(["train", str(config), f"data_dir={data_dir}", f"output_dir={output}"]) == 0
    capsys.readouterr()
    # overrides come before the flags
    changed = ["train", str(config), f"data_dir={data_dir}", f"output_dir={output}", "num_epochs=2", "seed=3"]
    assert main([*changed, "--resume"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "differs from the checkpoint's in 1 setting(s)" in error
    assert "seed: 0 -> 3. Restore them" in error
    assert main([*changed, "--resume", "--resume-ignore-config"]) == 0


def test_workers_give_the_same_batches_and_weights(tmp_path, data_dir):
    weights = {}
    for workers in (0, 2):
        trainer = tiny_trainer(
            tmp_path, data_dir, f"workers{workers}", num_workers=workers, validation_split=None
        )
        assert trainer.num_workers == workers
        trainer.train()
        weights[workers] = load_file(tmp_path / f"workers{workers}" / "final" / "model.safetensors")
    assert all(torch.equal(weights[0][name], weights[2][name]) for name in weights[0])
    from avs_models.training.trainer import default_num_workers

    assert 1 <= default_num_workers(1) <= 4 and default_num_workers(10_000) == 1


def test_drop_path_rate_sets_the_backbone_stochastic_depth(tmp_path):
    from avs_models.training.trainer import build_model

    config = load_training_config(
        str(write_tiny_config(tmp_path, model=TINY_C3N, drop_path_rate=0.1)), ["data_dir=unused"]
    )
    model = build_model(config)
    assert model.config.backbone_config.drop_path_rate == 0.1
    rates = [module.drop_prob for module in model.modules() if type(module).__name__.endswith("DropPath")]
    assert rates and max(rates) == pytest.approx(0.1)  # linear from 0 to 0.1 over the blocks
    pcmanet = load_training_config(str(write_tiny_config(tmp_path, drop_path_rate=0.1)), ["data_dir=unused"])
    with pytest.raises(ValueError, match="drop_path_rate=0.1 needs a vision backbone with stochastic depth"):
        build_model(pcmanet)
    with pytest.raises(ValueError, match=r"drop_path_rate must be in \[0, 1\)"):
        load_training_config("c3n_s4", ["drop_path_rate=1.5"])


@pytest.mark.parametrize(
    "preset, epochs", [("avsegformer_s4", 5), ("avsegformer_ms3", 10), ("avsegformer_avss", 0)]
)
def test_avsegformer_presets_freeze_the_backbone_as_the_official_runs(preset, epochs):
    # config/{s4,ms3,avss}/AVSegFormer_*.py: process.freeze_epochs
    assert load_training_config(preset).freeze_backbone_epochs == epochs
    assert all(
        load_training_config(name).freeze_backbone_epochs == 0
        for name in PRESETS
        if "avsegformer" not in name
    )


def test_frozen_backbone_epochs_leave_the_backbone_untouched_then_train_it(tmp_path, data_dir):
    output = tmp_path / "out"
    config = load_training_config(
        str(write_tiny_config(tmp_path, num_epochs=2, freeze_backbone_epochs=1, validation_split=None)),
        [f"data_dir={data_dir}", f"output_dir={output}", "save_total_limit=null", "optimizer.name=adamw"],
    )
    trainer = Trainer(config)
    initial = {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}
    trainer.train()
    after_first, after_second = (
        load_file(output / CHECKPOINTS / f"epoch-{epoch}" / "model.safetensors") for epoch in (1, 2)
    )
    backbone = [
        name for name in initial if name.startswith("backbone.") and initial[name].is_floating_point()
    ]
    # BatchNorm running statistics still follow the data (train mode), as in the official run.
    weights = [name for name in backbone if not name.endswith(("running_mean", "running_var"))]
    assert weights and all(torch.equal(after_first[name], initial[name]) for name in weights)
    assert any(not torch.equal(after_second[name], after_first[name]) for name in weights)
    assert not torch.equal(after_first["heads.0.classifier.weight"], initial["heads.0.classifier.weight"])


def test_freeze_backbone_epochs_errors(tmp_path):
    from accelerate import Accelerator

    with pytest.raises(ValueError, match="freeze_backbone_epochs must be 0"):
        load_training_config("avsegformer_s4", ["freeze_backbone_epochs=-1"])
    # A model of the user's own (model.name_or_path) without a `backbone` module.
    trainer = Trainer.__new__(Trainer)
    trainer.config = load_training_config("avsegformer_s4")
    trainer.accelerator, trainer.model = Accelerator(cpu=True), torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match=r"freeze_backbone_epochs=5: the model has no vision backbone"):
        trainer._backbone_parameters()


def test_the_terms_of_a_combined_loss_are_logged_with_it(tmp_path, data_dir):
    config = load_training_config(
        str(
            write_tiny_config(
                tmp_path, model=TINY_AVSEGFORMER, num_epochs=1, batch_size=2, validation_split=None
            )
        ),
        [f"data_dir={data_dir}", f"output_dir={tmp_path / 'out'}", "model.config.mix_loss_weight=0.1"],
    )
    state = Trainer(config).train()
    steps = [entry for entry in state["history"] if "loss" in entry]
    assert len(steps) == state["global_step"] > 0  # logging_steps 1
    for entry in steps:  # AVSegFormer: loss = mask_loss + 0.1 x mix_loss
        assert entry["loss"] == pytest.approx(entry["mask_loss"] + 0.1 * entry["mix_loss"], rel=1e-5)
