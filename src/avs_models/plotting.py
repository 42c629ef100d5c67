"""The papers' figures, drawn from the models' own outputs with matplotlib (the `plot` extra).

Every function takes arrays (frames, masks, maps, scores) and returns a matplotlib `Figure`;
`save_figure` writes it as a PNG. Maps are drawn over the frame they were computed from, each cell
of a stage's map as a block of equal colour (nearest upsampling), so what a square shows is one
value of the model's output, not an interpolation between values. `avs_models.explanation` computes the
arrays from a model and a video; `avs-models plot` and `avs-models evaluate --plot` use the
training-history and robustness figures.

Figures (paper figure numbers):

- `plot_confidence_masks`: PCMANet's progressive confidence masks per stage (PCMANet Fig. 5).
- `plot_grouped_attention`: PCMANet's AVGA cosine-similarity maps per stage and group (Fig. 9).
- `plot_consensus`: C3N's top-5 audio and visual classes, their re-weighted confidences, the pair
  scores and the unified label per frame (C3N Fig. 6).
- `plot_spatial_attention`: C3N's CCAM spatial attention per stage and frame (C3N Fig. 7).
- `plot_training_history`: loss, validation mIoU / F-score and PCMANet's kept-token ratio per
  stage over training (PCMANet Fig. 8).
- `plot_robustness`, `plot_robustness_frames`: mIoU and F-score against the noise level, and a
  frame strip per noise level (C3N Tables VI/VII, Fig. 10).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .processing.visualization import BINARY_COLOUR, overlay_mask

# Resolution of the PNGs, and the width (pixels) every frame is drawn at: wide enough for titles
# and for the squares of the coarsest maps, small enough that a figure of 4 x 8 maps stays a page.
DPI = 100
FRAME_DISPLAY_WIDTH = 240
PANEL_INCHES = 2.6
# Unconfident tokens (the ones the next QSCA keeps) in the confidence-mask figure: magenta, apart
# from the lime of predicted masks.
KEPT_TOKEN_COLOUR = (255, 0, 170)
MASK_ALPHA = 0.55
# Opacity of heat maps over their frame.
HEAT_ALPHA = 0.65
SIMILARITY_COLORMAP = "viridis"
ATTENTION_COLORMAP = "inferno"
SCORE_COLORMAP = "Blues"
PLOT_EXTRA_HINT = "pip install 'avs-models[plot]'"


# ----------------------------------------------------------------------------- figures and images
def _matplotlib():
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ModuleNotFoundError(
            f"drawing figures needs matplotlib, which is not installed: {PLOT_EXTRA_HINT}"
        ) from error
    return matplotlib, Figure


def new_figure(width_inches: float, height_inches: float):
    """A matplotlib `Figure` (no pyplot state, so figures can be drawn from any thread)."""
    _, figure_class = _matplotlib()
    return figure_class(figsize=(width_inches, height_inches), dpi=DPI, layout="constrained")


def save_figure(figure, path: str | Path) -> Path:
    """Write `figure` as a PNG at `DPI` (the folder is created if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, facecolor="white")
    return path


def colormap(name: str):
    matplotlib, _ = _matplotlib()
    return matplotlib.colormaps[name]


def value_range(maps: Sequence[np.ndarray]) -> tuple[float, float]:
    """The smallest and largest value over `maps` (widened when all values are equal)."""
    low = float(min(np.min(values) for values in maps))
    high = float(max(np.max(values) for values in maps))
    if high - low < 1e-6:
        low, high = low - 0.5e-6, high + 0.5e-6
    return low, high


def display_frame(frame: np.ndarray, width: int = FRAME_DISPLAY_WIDTH) -> np.ndarray:
    """An RGB frame `[H, W, 3]` resized (bilinear) to `width` pixels, keeping its aspect ratio."""
    frame = np.asarray(frame)
    height = max(1, round(frame.shape[0] * width / frame.shape[1]))
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))


def upsample_nearest(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A `[h, w]` map enlarged to `size` `(H, W)`: output pixel `(i, j)` takes cell
    `(floor(i * h / H), floor(j * w / W))`, so every cell becomes one block."""
    values = np.asarray(values)
    rows = np.arange(size[0]) * values.shape[0] // size[0]
    columns = np.arange(size[1]) * values.shape[1] // size[1]
    return values[rows[:, None], columns[None, :]]


def heat_overlay(
    frame: np.ndarray, values: np.ndarray, cmap, low: float, high: float, alpha: float = HEAT_ALPHA
) -> np.ndarray:
    """`values` `[h, w]` coloured by `cmap` over `[low, high]` and blended over `frame` `[H, W, 3]` uint8."""
    scaled = (upsample_nearest(values, frame.shape[:2]) - low) / (high - low)
    colours = cmap(np.clip(scaled, 0.0, 1.0))[..., :3] * 255
    return np.round((1 - alpha) * frame.astype(np.float64) + alpha * colours).astype(np.uint8)


def mask_overlay(
    frame: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], alpha: float = MASK_ALPHA
) -> np.ndarray:
    """A 0/1 mask `[h, w]` of any resolution drawn in `colour` over `frame` (outlined, as `overlay_mask`)."""
    blocks = upsample_nearest(np.asarray(mask) > 0, frame.shape[:2]).astype(np.uint8)
    palette = np.array([(0, 0, 0), colour], dtype=np.uint8)
    return overlay_mask(frame, blocks, alpha=alpha, palette=palette)


def _show(axes, image: np.ndarray, title: str | None = None) -> None:
    axes.imshow(image, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])
    if title:
        axes.set_title(title, fontsize=9)


def _colorbar(figure, axes, cmap, low: float, high: float, label: str):
    matplotlib, _ = _matplotlib()
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(low, high), cmap=cmap)
    bar = figure.colorbar(mappable, ax=axes, shrink=0.9, pad=0.01)
    bar.set_label(label, fontsize=9)
    bar.formatter = matplotlib.ticker.ScalarFormatter(useOffset=False)
    bar.update_ticks()
    return bar


def frame_label(index: int, times: Sequence[float] | None) -> str:
    return f"frame {index + 1}" if times is None else f"frame {index + 1} ({times[index]:.1f} s)"


# ----------------------------------------------------------------------------- PCMANet
def plot_confidence_masks(
    frames: Sequence[np.ndarray],
    predicted_masks: Sequence[np.ndarray],
    confidence_masks: Sequence[np.ndarray],
    stages: Sequence[int],
    kept_token_ratios: Sequence[float],
    times: Sequence[float] | None = None,
):
    """PCMANet's confidence masks (paper Fig. 5), one row per frame.

    Args:
        frames: the clip's frames, `[H, W, 3]` uint8 each.
        predicted_masks: the model's 0/1 mask per frame (any resolution).
        confidence_masks: per stage (deepest first), `[T, h, w]` 0/1: 1 marks an unconfident pixel,
            whose token the next QSCA keeps.
        stages: the stage number of each confidence mask (4, 3, 2).
        kept_token_ratios: the model's kept-token ratio per mask (`kept_token_ratios` output).
        times: each frame's time (s), for the row titles.
    """
    frames = [display_frame(frame) for frame in frames]
    columns = 1 + len(confidence_masks)
    aspect = frames[0].shape[0] / frames[0].shape[1]
    figure = new_figure(PANEL_INCHES * columns, PANEL_INCHES * aspect * len(frames) + 1.1)
    grid = figure.subplots(len(frames), columns, squeeze=False)
    for row, frame in enumerate(frames):
        _show(
            grid[row, 0],
            mask_overlay(frame, predicted_masks[row], BINARY_COLOUR),
            f"{frame_label(row, times)}: prediction",
        )
        for column, (stage, masks) in enumerate(zip(stages, confidence_masks), start=1):
            mask = np.asarray(masks[row])
            title = f"stage {stage} ({mask.shape[0]}x{mask.shape[1]}): {mask.mean():.0%} kept"
            _show(grid[row, column], mask_overlay(frame, mask, KEPT_TOKEN_COLOUR), title)
    ratios = ", ".join(f"stage {stage} {ratio:.1%}" for stage, ratio in zip(stages, kept_token_ratios))
    figure.suptitle(
        "PCMANet confidence masks (CIM), coarse to fine: magenta = unconfident tokens the next QSCA keeps\n"
        f"kept-token ratio of the clip: {ratios}",
        fontsize=10,
    )
    return figure


def plot_grouped_attention(
    frame: np.ndarray,
    similarity_maps: Sequence[np.ndarray],
    stages: Sequence[int],
    label: str = "",
):
    """PCMANet's AVGA cosine-similarity maps of one frame (paper Fig. 9) over that frame: a row per
    stage, a column per channel group, one colour scale for all maps.

    Args:
        frame: `[H, W, 3]` uint8.
        similarity_maps: per stage, `[G, h, w]`: the cosine similarity between the (projected) audio
            vector and each channel group of every pixel.
        stages: the stage number of each row.
        label: names the frame in the title.
    """
    frame = display_frame(frame)
    groups = max(len(maps) for maps in similarity_maps)
    cmap = colormap(SIMILARITY_COLORMAP)
    low, high = value_range(similarity_maps)
    aspect = frame.shape[0] / frame.shape[1]
    figure = new_figure(1.0 + 1.9 * (groups + 1), 1.9 * aspect * len(similarity_maps) + 0.9)
    grid = figure.subplots(len(similarity_maps), groups + 1, squeeze=False)
    for row, (stage, maps) in enumerate(zip(stages, similarity_maps)):
        _show(grid[row, 0], frame, f"stage {stage} ({maps.shape[1]}x{maps.shape[2]})")
        for group in range(groups):
            axes = grid[row, group + 1]
            if group < len(maps):
                _show(axes, heat_overlay(frame, maps[group], cmap, low, high), f"group {group + 1}")
            else:
                axes.set_axis_off()
    _colorbar(figure, grid, cmap, low, high, "cosine similarity of audio and channel group")
    title = "PCMANet AVGA: audio-visual cosine similarity per stage (rows) and channel group (columns)"
    figure.suptitle(f"{title}, {label}" if label else title, fontsize=10)
    return figure


# ----------------------------------------------------------------------------- C3N
@dataclass
class ConsensusFrame:
    """C3N's cognitive consensus for one frame (paper Fig. 6), from the model's outputs.

    Attributes:
        visual_classes, audio_classes: names of the top classes, best first.
        visual_confidences, audio_confidences: their re-weighted confidences (`c ** beta`, `c ** alpha`).
        pair_scores: `[K_visual, K_audio]` consensus score of each pair of top classes.
        unified_label: name of the visual class the consensus chose for the frame.
    """

    visual_classes: list[str]
    visual_confidences: list[float]
    audio_classes: list[str]
    audio_confidences: list[float]
    pair_scores: np.ndarray
    unified_label: str


def _bars(
    axes, names: Sequence[str], values: Sequence[float], colour: str, highlight: str | None, title: str
) -> None:
    positions = np.arange(len(names))
    colours = ["tab:red" if name == highlight else colour for name in names]
    axes.barh(positions, values, color=colours)
    axes.set_yticks(positions, labels=names, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, 1.2)
    axes.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    axes.set_title(title, fontsize=9)
    for position, value in zip(positions, values):
        axes.text(value + 0.02, position, f"{value:.3f}", va="center", fontsize=8)


def plot_consensus(
    frames: Sequence[np.ndarray], consensus: Sequence[ConsensusFrame], times: Sequence[float] | None = None
):
    """C3N's cognitive consensus (paper Fig. 6), one row per frame: the frame, the top visual and audio
    classes with their re-weighted confidences, the consensus score of each pair of them (the best
    pair framed) and the unified label (in red where it is among the top visual classes)."""
    frames = [display_frame(frame) for frame in frames]
    cmap = colormap(SCORE_COLORMAP)
    figure = new_figure(14.5, 2.5 * len(frames) + 0.8)
    grid = figure.subplots(
        len(frames), 4, squeeze=False, gridspec_kw={"width_ratios": [1.0, 1.25, 1.25, 1.1]}
    )
    for row, (frame, entry) in enumerate(zip(frames, consensus)):
        _show(grid[row, 0], frame, f"{frame_label(row, times)}\nunified label: {entry.unified_label}")
        _bars(
            grid[row, 1],
            entry.visual_classes,
            entry.visual_confidences,
            "tab:blue",
            entry.unified_label,
            "top visual classes (re-weighted)",
        )
        _bars(
            grid[row, 2],
            entry.audio_classes,
            entry.audio_confidences,
            "tab:green",
            None,
            "top audio classes (re-weighted)",
        )
        axes = grid[row, 3]
        scores = np.asarray(entry.pair_scores)
        axes.imshow(scores, cmap=cmap, vmin=0, vmax=max(float(scores.max()), 1e-12), interpolation="nearest")
        axes.set_xticks(
            range(scores.shape[1]), labels=[str(i + 1) for i in range(scores.shape[1])], fontsize=8
        )
        axes.set_yticks(
            range(scores.shape[0]), labels=[str(i + 1) for i in range(scores.shape[0])], fontsize=8
        )
        axes.set_xlabel("audio class (rank)", fontsize=8)
        axes.set_ylabel("visual class (rank)", fontsize=8)
        axes.set_title("pair consensus scores", fontsize=9)
        best_row, best_column = np.unravel_index(int(scores.argmax()), scores.shape)
        for (i, j), value in np.ndenumerate(scores):
            axes.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > 0.6 * scores.max() else "black",
            )
        axes.add_patch(
            _matplotlib()[0].patches.Rectangle(
                (best_column - 0.5, best_row - 0.5), 1, 1, fill=False, edgecolor="tab:red", linewidth=2.5
            )
        )
    figure.suptitle(
        "C3N cognitive consensus (C3IM): re-weighted class confidences, pair scores "
        "(audio confidence x label similarity x visual confidence) and the unified label",
        fontsize=10,
    )
    return figure


def plot_spatial_attention(
    frames: Sequence[np.ndarray],
    attention_maps: Sequence[np.ndarray],
    stages: Sequence[int],
    times: Sequence[float] | None = None,
):
    """C3N's CCAM spatial attention (paper Fig. 7) over each frame: a row per stage with its own colour
    scale (shared by the row's frames), a column per frame.

    Args:
        attention_maps: per stage, `[T, h, w]` spatial attention in (0, 1).
    """
    frames = [display_frame(frame) for frame in frames]
    cmap = colormap(ATTENTION_COLORMAP)
    aspect = frames[0].shape[0] / frames[0].shape[1]
    figure = new_figure(max(6.0, 1.2 + 2.2 * len(frames)), 2.2 * aspect * (len(attention_maps) + 1) + 1.0)
    grid = figure.subplots(len(attention_maps) + 1, len(frames), squeeze=False)
    for column, frame in enumerate(frames):
        _show(grid[0, column], frame, frame_label(column, times))
    for row, (stage, maps) in enumerate(zip(stages, attention_maps), start=1):
        low, high = value_range(maps)
        for column, frame in enumerate(frames):
            _show(
                grid[row, column],
                heat_overlay(frame, maps[column], cmap, low, high),
                f"stage {stage} ({maps.shape[1]}x{maps.shape[2]})",
            )
        _colorbar(figure, grid[row, :], cmap, low, high, f"stage {stage}")
    figure.suptitle("C3N CCAM spatial attention per stage, from the unified label's gradient", fontsize=10)
    return figure


# ----------------------------------------------------------------------------- training runs
# PCMANet's `kept_token_ratios` hold one ratio per confidence mask, made by stages 4, 3 and 2 and
# used by the QSCA of stages 3, 2 and 1 (`PCMANetSegmentationOutput`).
KEPT_TOKEN_MASK_STAGES = (4, 3, 2)


def load_training_history(run_dir: str | Path) -> tuple[list[dict], Path]:
    """The logged history of a training run and the file it was read from.

    Reads `RUN_DIR/trainer_state.json` (written when training ends) or the one of the latest
    checkpoint (written at each checkpoint of a run still going), whichever is further along.
    """
    from .training.trainer import CHECKPOINTS, LATEST, TRAINER_STATE

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"RUN_DIR not found: {run_dir} (pass the output_dir of a training run)")
    candidates = [run_dir / TRAINER_STATE]
    latest = run_dir / CHECKPOINTS / LATEST
    if latest.is_file():
        candidates.append(run_dir / CHECKPOINTS / latest.read_text().strip() / TRAINER_STATE)
    states = []
    for path in candidates:
        if not path.is_file():
            continue
        try:
            state = json.loads(path.read_text())
            history = state["history"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path} is not a trainer state with a 'history' list ({error})") from error
        states.append((state.get("global_step", 0), history, path))
    if not states:
        raise FileNotFoundError(
            f"{run_dir} holds no {TRAINER_STATE}, neither at its top (written when training ends) nor in "
            f"{CHECKPOINTS}/{LATEST}'s checkpoint: pass the output_dir of a training run"
        )
    _, history, path = max(states, key=lambda state: state[0])
    return history, path


def plot_training_history(history: Sequence[dict]) -> dict:
    """Figures of a training run's logged history, by name: `loss` (training loss and, for PCMANet,
    each stage's loss, per step), `validation` (mIoU and F-score per epoch, when validated) and
    `kept_tokens` (PCMANet's kept-token ratio of each confidence mask per step, paper Fig. 8)."""
    steps = [entry for entry in history if "loss" in entry]
    validations = [entry for entry in history if "val_miou" in entry]
    if not steps and not validations:
        raise ValueError("the training history has no logged step yet (loss or validation)")
    figures = {}
    if steps:
        figure = new_figure(7.5, 4.2)
        axes = figure.subplots()
        x = [entry["step"] for entry in steps]
        axes.plot(x, [entry["loss"] for entry in steps], color="black", linewidth=2, label="loss")
        if all("stage_losses" in entry for entry in steps):
            for stage in range(len(steps[0]["stage_losses"])):
                values = [entry["stage_losses"][stage] for entry in steps]
                axes.plot(x, values, linestyle="--", linewidth=1, label=f"stage {stage + 1} loss")
        axes.set_xlabel("step")
        axes.set_ylabel("loss")
        axes.set_title("training loss")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figures["loss"] = figure
    if validations:
        figure = new_figure(7.5, 4.2)
        axes = figure.subplots()
        x = [entry["epoch"] + 1 for entry in validations]
        axes.plot(x, [entry["val_miou"] for entry in validations], marker="o", label="mIoU")
        axes.plot(
            x, [entry["val_fscore"] for entry in validations], marker="s", linestyle="--", label="F-score"
        )
        axes.set_xlabel("epoch")
        axes.set_ylabel("score")
        axes.set_ylim(0, 1)
        axes.set_title("validation")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figures["validation"] = figure
    kept = [entry for entry in steps if "kept_token_ratios" in entry]
    if kept:
        figure = new_figure(7.5, 4.2)
        axes = figure.subplots()
        x = [entry["step"] for entry in kept]
        for index, stage in enumerate(KEPT_TOKEN_MASK_STAGES[: len(kept[0]["kept_token_ratios"])]):
            values = [entry["kept_token_ratios"][index] for entry in kept]
            axes.plot(x, values, label=f"mask of stage {stage} (QSCA of stage {stage - 1})")
        axes.set_xlabel("step")
        axes.set_ylabel("kept tokens (share of the batch's tokens)")
        axes.set_ylim(0, 1)
        axes.yaxis.set_major_formatter(_matplotlib()[0].ticker.PercentFormatter(1.0))
        axes.set_title("PCMANet kept-token ratio of each confidence mask during training")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figures["kept_tokens"] = figure
    return figures


# ----------------------------------------------------------------------------- robustness
# The perturbations of `avs_models.evaluation.evaluate_split` a robustness figure plots against:
# (result key, panel title, axis label, whether more noise is a smaller value).
NOISE_KINDS = (
    ("snr_db", "audio noise", "audio SNR (dB)", True),
    ("frame_snr_db", "frame noise", "frame SNR (dB)", True),
    ("frame_noise_std", "frame noise", "noise standard deviation (pixels in [0, 1])", False),
)


def plot_robustness(results: dict[str, dict[str, dict]]):
    """mIoU and F-score against the noise level (C3N Tables VI and VII), a panel per kind of noise.

    Args:
        results: model name -> setting name -> an `evaluate_split` result (`miou`, `fscore` and the
            perturbation keys of `NOISE_KINDS`); the setting without noise is drawn as dotted lines.
    """
    kinds = [
        kind
        for kind in NOISE_KINDS
        if any(
            result.get(kind[0]) is not None for settings in results.values() for result in settings.values()
        )
    ]
    if not kinds:
        raise ValueError(
            "no noisy setting to plot: evaluate with --noise-snr, --frame-noise-snr or --frame-noise"
        )
    figure = new_figure(6.0 * len(kinds), 4.4)
    panels = figure.subplots(1, len(kinds), squeeze=False)[0]
    colours = _matplotlib()[0].colormaps["tab10"]
    for axes, (key, title, label, smaller_is_noisier) in zip(panels, kinds):
        for number, (model, settings) in enumerate(results.items()):
            colour = colours(number % 10)
            name = f"{model}: " if len(results) > 1 else ""
            noisy = sorted(
                (result[key], result) for result in settings.values() if result.get(key) is not None
            )
            x = [level for level, _ in noisy]
            axes.plot(x, [r["miou"] for _, r in noisy], marker="o", color=colour, label=f"{name}mIoU")
            axes.plot(
                x,
                [r["fscore"] for _, r in noisy],
                marker="s",
                linestyle="--",
                color=colour,
                label=f"{name}F-score",
            )
            clean = [r for r in settings.values() if all(r.get(k) is None for k, *_ in NOISE_KINDS)]
            if clean:
                axes.axhline(
                    clean[0]["miou"], color=colour, linestyle=":", linewidth=1, label=f"{name}mIoU, no noise"
                )
                axes.axhline(
                    clean[0]["fscore"],
                    color=colour,
                    linestyle="-.",
                    linewidth=1,
                    label=f"{name}F-score, no noise",
                )
        if smaller_is_noisier:
            axes.invert_xaxis()  # less noise on the left, as the papers' tables read
        axes.set_xlabel(label)
        axes.set_ylabel("score")
        axes.set_ylim(0, 1)
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle("robustness to noise", fontsize=10)
    return figure


def plot_robustness_frames(examples: Sequence[tuple[str, np.ndarray, np.ndarray]], title: str):
    """A frame strip per noise level (C3N Fig. 10): the frame the model received (noisy for frame
    noise) above the mask it predicted.

    Args:
        examples: `(setting name, frame [H, W, 3] uint8, predicted 0/1 mask)` per setting.
    """
    frames = [display_frame(frame) for _, frame, _ in examples]
    aspect = frames[0].shape[0] / frames[0].shape[1]
    figure = new_figure(2.2 * len(examples) + 0.2, 2.2 * aspect * 2 + 0.9)
    grid = figure.subplots(2, len(examples), squeeze=False)
    for column, ((name, _, mask), frame) in enumerate(zip(examples, frames)):
        _show(grid[0, column], frame, name)
        _show(grid[1, column], mask_overlay(frame, mask, BINARY_COLOUR), "prediction")
    figure.suptitle(title, fontsize=10)
    return figure
