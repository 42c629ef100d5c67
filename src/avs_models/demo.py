"""The offline demo: synthetic data, a small PCMANet trained with the real training loop,
evaluation with the clips' own and with swapped audio, and overlays of a held-out clip."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from avs_models.data import AVSBenchCollator, images_to_tensor, make_synthetic_avsbench, resize_frames
from avs_models.evaluation import PerturbedSplit, evaluate_split, format_table, predict_masks
from avs_models.models.auto import AutoModelForAudioVisualSegmentation
from avs_models.processing.visualization import caption, overlay_mask
from avs_models.training import AVSBenchSplit, Trainer, TrainingConfig

logger = logging.getLogger(__name__)


def small_pcmanet(width: int = 32) -> dict:
    """A small PCMANet: ResNet-style backbone and VGGish shrunk so it trains in minutes on a CPU.

    No pretrained VGGish is available offline, so the audio encoder is trained too
    (`freeze_audio_encoder: false`), and it starts with larger random weights
    (`initializer_range: 0.12`): with the default 0.02 the shrunk network's embeddings are
    almost the same for every sound, and the model would learn to ignore the audio.
    """
    return {
        "model_type": "pcmanet",
        "config": {
            "backbone_config": {
                "model_type": "resnet",
                "embedding_size": width // 2,
                "hidden_sizes": [width // 2, width, width * 3 // 2, width * 2],
                "depths": [1, 1, 1, 1],
                "out_features": ["stage1", "stage2", "stage3", "stage4"],
                "layer_type": "bottleneck",
                "downsample_in_bottleneck": False,
            },
            "audio_config": {
                "model_type": "vggish",
                "stage_channels": [[8], [16], [16, 16], [32, 32]],
                "hidden_sizes": [64, 64],
                "initializer_range": 0.12,
            },
            "freeze_audio_encoder": False,
            "hidden_size": width,
            "avga_groups": 4,
            "qsca_num_heads": 2,
            "qsca_head_dim": width // 2,
            "qsca_pool_sizes": [8, 4, 2, 2],
        },
    }


# Overlays are enlarged to at least this many pixels per frame, so the small demo frames stay legible.
LEGIBLE_FRAME_SIZE = 160


def _enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    return image.repeat(scale, axis=0).repeat(scale, axis=1)


def _strip(frames: np.ndarray, masks: np.ndarray | None, scale: int) -> np.ndarray:
    """Frames `[T, H, W, 3]` side by side, enlarged, with their masks `[T, H, W]` drawn in (if given)."""
    tiles = []
    for index, frame in enumerate(frames):
        tile = _enlarge(frame, scale)
        if masks is not None:
            tile = overlay_mask(tile, _enlarge((masks[index] > 0).astype(np.uint8), scale), alpha=0.5)
        tiles.append(tile)
        tiles.append(np.full((tile.shape[0], 4, 3), 255, dtype=np.uint8))
    return np.concatenate(tiles[:-1], axis=1)


def write_overlays(model, data_dir: Path, subset: str, image_size: int, out_dir: Path) -> list[Path]:
    """Overlays of the first test clip with its own audio and with the next clip's audio, enlarged to a
    legible size, each with a caption; and `overlay_example.png`, the rows frames / ground truth / own
    audio / other audio in one picture (the one in the docs)."""
    split = AVSBenchSplit(data_dir, subset, "test")
    collator = AVSBenchCollator(subset, image_size)
    example, other = split[0], split[1]
    frames = resize_frames(images_to_tensor(example["frames"]), image_size)
    frames = (frames.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    scale = max(1, -(-LEGIBLE_FRAME_SIZE // image_size))
    batch = collator([example])
    truth = batch["labels"][0].numpy()[: len(frames)]
    truth = np.where(batch["labeled_frames"][0, : len(frames), None, None].numpy(), truth, 0)
    rows = [
        caption(_strip(frames, None, scale), f"{example['video_id']}: frames, one per second"),
        caption(_strip(frames, truth, scale), "ground truth"),
    ]
    paths = []
    variants = (
        ("own_audio", split, f"predicted with its own audio ({example['video_id']})"),
        (
            "other_audio",
            PerturbedSplit(split, swap_audio=True),
            f"predicted with the audio of {other['video_id']}",
        ),
    )
    for name, variant, text in variants:
        masks = predict_masks(model, collator([variant[0]]))[0].numpy()[: len(frames)]
        row = caption(_strip(frames, masks, scale), text)
        path = out_dir / f"overlay_{name}.png"
        Image.fromarray(row).save(path)
        paths.append(path)
        rows.append(row)
    width = max(row.shape[1] for row in rows)
    figure = np.concatenate(
        [np.pad(row, ((0, 8), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows]
    )
    Image.fromarray(figure).save(out_dir / "overlay_example.png")
    return paths


def run_demo(
    out_dir: str | Path,
    *,
    subset: str = "ms3",
    num_videos: int = 60,
    num_epochs: int = 30,
    image_size: int = 64,
    width: int = 32,
    batch_size: int = 2,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> dict:
    """Run the demo in `out_dir`; returns the held-out metrics with own and swapped audio."""
    if subset not in ("s4", "ms3"):
        raise ValueError(f"the demo runs on s4 or ms3, got {subset!r}")
    if num_videos < 10:
        raise ValueError(
            f"num_videos must be at least 10, so that 2 held-out clips can swap audio; got {num_videos}"
        )
    out_dir = Path(out_dir)
    data_dir = out_dir / "data"
    make_synthetic_avsbench(
        data_dir, subset, num_videos, seed=seed, image_size=image_size, num_objects=(2, 3)
    )
    config = TrainingConfig(
        subset=subset,
        data_dir=str(data_dir),
        output_dir=str(out_dir / "training"),
        model=small_pcmanet(width),
        optimizer={"name": "adam", "learning_rate": learning_rate},
        batch_size=batch_size,
        num_epochs=num_epochs,
        image_size=image_size,
        seed=seed,
        logging_steps=20,
    )
    Trainer(config).train()
    best = Path(config.output_dir) / "best"
    model = AutoModelForAudioVisualSegmentation.from_pretrained(best).eval()
    results = {
        "own audio": evaluate_split(model, data_dir, subset, "test", image_size=image_size),
        "swapped audio": evaluate_split(
            model, data_dir, subset, "test", image_size=image_size, swap_audio=True
        ),
    }
    overlays = write_overlays(model, data_dir, subset, image_size, out_dir)
    summary = {
        name: {"miou": r["miou"], "fscore": r["fscore"], "num_videos": r["num_videos"]}
        for name, r in results.items()
    }
    summary["definition"] = results["own audio"]["definition"]
    summary["overlays"] = [str(path) for path in overlays]
    summary["model"] = str(best)
    (out_dir / "demo_results.json").write_text(json.dumps(summary, indent=1))
    print(f"held-out {subset} test clips ({results['own audio']['definition']} definition):")
    print(format_table([{"setting": name, **result} for name, result in results.items()]))
    print("overlays:", *summary["overlays"], sep="\n  ")
    return summary


__all__ = ["run_demo", "small_pcmanet", "write_overlays"]
