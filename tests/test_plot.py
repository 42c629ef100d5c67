"""`avs-models plot` (a real tiny training run's curves) and `avs-models evaluate --plot` (noise sweeps and
frame strips): the PNGs exist at their figures' size and draw the logged and measured numbers."""

import json
import shutil
import sys

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_cli import assert_one_line_error, run_cli
from test_explain import saved_png
from tiny_training import TINY_MODEL

from avs_models.cli import main
from avs_models.data import make_synthetic_avsbench
from avs_models.data.transforms import to_pil
from avs_models.evaluation import PerturbedSplit, perturbed_examples
from avs_models.models.auto import AutoModelForAudioVisualSegmentation
from avs_models.plotting import (
    BINARY_COLOUR,
    DPI,
    display_frame,
    load_training_history,
    mask_overlay,
    new_figure,
    plot_robustness,
    plot_robustness_frames,
    plot_training_history,
)
from avs_models.training import Trainer, TrainingConfig
from avs_models.training.trainer import AVSBenchSplit


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_avsbench(root, "s4", 8, seed=0, image_size=32)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir):
    """A real run of a tiny PCMANet: 2 epochs, every step logged, validated after each epoch."""
    output = tmp_path_factory.mktemp("run")
    config = TrainingConfig(
        subset="s4",
        data_dir=str(data_dir),
        output_dir=str(output),
        model=TINY_MODEL,
        optimizer={"name": "adam", "learning_rate": 1e-3},
        batch_size=2,
        num_epochs=2,
        image_size=32,
        logging_steps=1,
        num_workers=0,
        report_to="tensorboard",
    )
    Trainer(config).train()
    return output


def line_data(axes) -> dict[str, list[float]]:
    return {line.get_label(): list(line.get_ydata()) for line in axes.get_lines()}


# ----------------------------------------------------------------------------- training runs
def test_plot_command_draws_the_runs_history(run_dir, tmp_path, capsys):
    assert main(["plot", str(run_dir)]) == 0
    assert "trainer_state.json" in capsys.readouterr().out
    names = ["training_kept_tokens.png", "training_loss.png", "training_validation.png"]
    assert sorted(path.name for path in (run_dir / "plots").iterdir()) == names
    for name in names:
        with Image.open(run_dir / "plots" / name) as picture:
            assert picture.size == (750, 420)

    history, source = load_training_history(run_dir)
    assert source == run_dir / "trainer_state.json"
    steps = [entry for entry in history if "loss" in entry]
    validations = [entry for entry in history if "val_miou" in entry]
    assert len(steps) == 4 and len(validations) == 2  # 2 epochs of 2 steps (4 training clips, batch 2)
    figures = plot_training_history(history)

    kept = line_data(figures["kept_tokens"].axes[0])
    assert list(kept) == [
        "mask of stage 4 (QSCA of stage 3)",
        "mask of stage 3 (QSCA of stage 2)",
        "mask of stage 2 (QSCA of stage 1)",
    ]
    for index, values in enumerate(kept.values()):
        assert values == pytest.approx([entry["kept_token_ratios"][index] for entry in steps])
    loss = line_data(figures["loss"].axes[0])
    assert loss["loss"] == pytest.approx([entry["loss"] for entry in steps])
    assert loss["stage 4 loss"] == pytest.approx([entry["stage_losses"][3] for entry in steps])
    validation = line_data(figures["validation"].axes[0])
    assert validation == {
        "mIoU": pytest.approx([entry["val_miou"] for entry in validations]),
        "F-score": pytest.approx([entry["val_fscore"] for entry in validations]),
    }
    saved_png(figures["kept_tokens"], tmp_path / "kept.png")


def test_tensorboard_gets_a_curve_per_stage(run_dir):
    history, _ = load_training_history(run_dir)
    steps = [entry for entry in history if "loss" in entry]
    runs = {events.parent for events in (run_dir / "logs").rglob("events.out.tfevents.*")}
    accumulators = [EventAccumulator(str(run)).Reload() for run in runs]
    accumulator = next(acc for acc in accumulators if "loss" in acc.Tags()["scalars"])
    for stage in range(3):
        logged = [event.value for event in accumulator.Scalars(f"kept_token_ratios/{stage}")]
        assert logged == pytest.approx([entry["kept_token_ratios"][stage] for entry in steps], abs=1e-6)
    assert "stage_losses/3" in accumulator.Tags()["scalars"]


def test_plot_reads_the_latest_checkpoint_of_a_run_still_going(run_dir, tmp_path, capsys):
    running = tmp_path / "running"
    shutil.copytree(run_dir, running)
    (running / "trainer_state.json").unlink()  # written only when training ends
    latest = (running / "checkpoints" / "latest").read_text().strip()
    assert main(["plot", str(running), "--out", str(tmp_path / "plots")]) == 0
    assert f"{latest}/trainer_state.json" in capsys.readouterr().out
    history, source = load_training_history(running)
    assert source == running / "checkpoints" / latest / "trainer_state.json"
    assert history == json.loads(source.read_text())["history"]
    assert (tmp_path / "plots" / "training_kept_tokens.png").is_file()


def test_models_without_kept_tokens_get_loss_and_validation_only(run_dir):
    history, _ = load_training_history(run_dir)
    without = [
        {k: v for k, v in entry.items() if k not in ("kept_token_ratios", "stage_losses")}
        for entry in history
    ]
    figures = plot_training_history(without)
    assert sorted(figures) == ["loss", "validation"]
    assert list(line_data(figures["loss"].axes[0])) == ["loss"]
    with pytest.raises(ValueError, match="no logged step"):
        plot_training_history([])


def test_plot_errors_are_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "trainer_state.json").write_text("{not json")
    cases = [
        (tmp_path / "missing", ["RUN_DIR not found", "missing"]),
        (empty, ["holds no trainer_state.json", "latest"]),
        (broken, ["broken/trainer_state.json", "not a trainer state"]),
    ]
    for folder, fragments in cases:
        code, err = run_cli(capsys, "plot", folder)
        assert_one_line_error(code, err, "plot", *fragments)


# ----------------------------------------------------------------------------- robustness
def test_frame_noise_at_an_snr_has_that_snr(data_dir):
    split = AVSBenchSplit(data_dir, "s4", "test")
    clean = PerturbedSplit(split)[0]["frames"]
    noisy = PerturbedSplit(split, frame_snr_db=20)[0]["frames"]
    for clean_frame, noisy_frame in zip(clean, noisy):
        pixels = np.asarray(to_pil(clean_frame).convert("RGB"), float) / 255
        noise = np.asarray(noisy_frame, float) / 255 - pixels
        snr = 10 * np.log10(np.mean(pixels**2) / np.mean(noise**2))
        assert snr == pytest.approx(20, abs=0.6)  # clipping to [0, 1] and rounding to 8 bits move it a little
    with pytest.raises(ValueError, match="not both"):
        PerturbedSplit(split, frame_snr_db=20, frame_noise_std=0.1)


def test_evaluate_plot_draws_the_sweeps_and_frame_strips(run_dir, data_dir, tmp_path, capsys):
    model_dir = run_dir / "final"
    plots, results_path = tmp_path / "plots", tmp_path / "results.json"
    argv = ["evaluate", str(model_dir), str(data_dir), "--subset", "s4", "--noise-snr", "10", "-10"]
    argv += ["--frame-noise-snr", "20", "5", "--plot", str(plots), "--json", str(results_path)]
    assert main(argv) == 0
    capsys.readouterr()
    names = ["robustness.png", "robustness_frames_audio_noise.png", "robustness_frames_frame_noise.png"]
    assert sorted(path.name for path in plots.iterdir()) == names
    results = json.loads(results_path.read_text())
    assert results["frame noise 5 dB"]["frame_snr_db"] == 5

    figure = plot_robustness({"model": results})
    with Image.open(plots / "robustness.png") as picture:
        assert picture.size == tuple((figure.get_size_inches() * DPI).round().astype(int))
    audio, frames = figure.axes
    assert audio.get_xlabel() == "audio SNR (dB)" and frames.get_xlabel() == "frame SNR (dB)"
    assert audio.xaxis_inverted()  # less noise on the left, as the papers' tables
    drawn = line_data(audio)
    assert drawn["mIoU"] == pytest.approx([results[f"audio noise {snr} dB"]["miou"] for snr in (-10, 10)])
    assert drawn["F-score"] == pytest.approx(
        [results[f"audio noise {snr} dB"]["fscore"] for snr in (-10, 10)]
    )
    assert drawn["mIoU, no noise"] == pytest.approx([results["clean"]["miou"]] * 2)
    assert line_data(frames)["mIoU"] == pytest.approx(
        [results[f"frame noise {snr} dB"]["miou"] for snr in (5, 20)]
    )


def test_frame_strips_show_the_frame_the_model_received_and_its_mask(run_dir, data_dir, tmp_path):
    model = AutoModelForAudioVisualSegmentation.from_pretrained(run_dir / "final").eval()
    settings = {"clean": {}, "audio noise -10 dB": {"snr_db": -10}, "frame noise 5 dB": {"frame_snr_db": 5}}
    examples = perturbed_examples(model, data_dir, "s4", "test", settings, image_size=32)
    (_, clean, _), (_, audio_noise, _), (_, frame_noise, mask) = examples
    np.testing.assert_array_equal(audio_noise, clean)  # audio noise leaves the frame as it was
    assert np.abs(frame_noise.astype(float) - clean).mean() > 5
    assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 1}

    figure = plot_robustness_frames(examples, "strip")
    saved_png(figure, tmp_path / "strip.png")
    for column, (name, frame, predicted) in enumerate(examples):
        assert figure.axes[column].get_title() == name
        shown = figure.axes[len(examples) + column].get_images()[0].get_array()
        np.testing.assert_array_equal(shown, mask_overlay(display_frame(frame), predicted, BINARY_COLOUR))


def test_evaluate_plot_needs_a_noise_sweep(run_dir, data_dir, tmp_path, capsys):
    code, err = run_cli(capsys, "evaluate", run_dir / "final", data_dir, "--plot", tmp_path)
    assert_one_line_error(code, err, "evaluate", "--plot draws noise sweeps", "--noise-snr")


def test_without_matplotlib_the_error_says_how_to_install_it(monkeypatch):
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as where it is not installed
    with pytest.raises(ModuleNotFoundError, match=r"needs matplotlib.*pip install 'avs-models\[plot\]'"):
        new_figure(1, 1)
