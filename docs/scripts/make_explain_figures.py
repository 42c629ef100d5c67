"""Make the pictures of docs/looking-inside.md (docs/images/explain_*.png) from real models, offline.

    python docs/scripts/make_explain_figures.py            # writes docs/images/explain_*.png

Every picture is made by the package's own commands (`avs-models explain`, `avs-models plot`,
`avs-models evaluate --plot`) on models trained here, so the page shows what a user gets:

- PCMANet: the small PCMANet of `avs-models demo`, trained on synthetic MS3 clips (the web app's
  cached copy, trained on first use: about ten minutes on one CPU thread; `$AVS_MODELS_CACHE`
  chooses the folder). It is explained on one of the app's synthetic example clips, which it never
  saw in training; its training run gives the curves, and its held-out test clips the noise sweeps.
- C3N: a tiny C3N on the same synthetic world, whose backbone with its visual head and whose audio
  encoder with its audio head are trained here (a few minutes) to name the objects seen and the
  sounds heard in each second. Its label similarity says which object makes which sound (each of
  the synthetic world's 8 kinds makes one sound), as the paper's similarity of label names does for
  ImageNet and AudioSet. Its segmentation decoder is not trained: the consensus and CCAM figures are
  computed before the decoder and do not depend on it.

The pictures depend on the machine's floating-point rounding only through the trained weights; a
rerun on another machine gives pictures of the same kind, not the same pixels.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from avs_models import C3NConfig, C3NForAudioVisualSegmentation
from avs_models.app import cache_dir, ensure_demo_model, example_clips
from avs_models.cli import main as avs_models
from avs_models.data.avsbench import SYNTHETIC_CATEGORIES
from avs_models.data.synthetic import (
    NUM_KINDS,
    SAMPLING_RATE,
    render_audio,
    render_frame,
    sample_scene,
    sample_sounding,
)
from avs_models.processing import processor_for

REPOSITORY = Path(__file__).resolve().parents[2]
# The synthetic kinds in the order of data/synthetic.py: how each object looks (visual class names)
# and, from SYNTHETIC_CATEGORIES, the sound it makes (audio class names).
OBJECT_NAMES = [
    "red circle",
    "green square",
    "blue triangle",
    "yellow diamond",
    "magenta ring",
    "cyan cross",
    "orange ellipse",
    "white hexagon",
]
SOUND_NAMES = [name.removeprefix("synthetic-").replace("-", " ") for name in SYNTHETIC_CATEGORIES]
IMAGE_SIZE, NUM_FRAMES = 64, 5
EXAMPLE_CLIP = 0  # which of the app's example clips is explained


def tiny_c3n_config() -> C3NConfig:
    return C3NConfig(
        backbone_config={
            "model_type": "pvt_v2",
            "depths": [1, 1, 1, 1],
            "hidden_sizes": [16, 32, 64, 128],
            "num_attention_heads": [1, 1, 2, 4],
            "out_features": ["stage1", "stage2", "stage3", "stage4"],
        },
        audio_config={
            "model_type": "vggish",
            "stage_channels": [[8], [16], [32, 32], [32, 32]],
            "hidden_sizes": [64],
            "embedding_size": 32,
            "classifier_hidden_size": 32,
            "num_labels": NUM_KINDS,
            # Larger random weights, so the shrunk VGGish's embeddings differ between sounds from
            # the start (as the demo's PCMANet, see avs_models.demo.small_pcmanet).
            "initializer_range": 0.12,
        },
        hidden_size=16,
        head_hidden_sizes=[8, 4],
        num_visual_classes=NUM_KINDS,
        num_audio_classes=NUM_KINDS,
        audio_embed_dim=32,
        visual_label_names=OBJECT_NAMES,
        audio_label_names=SOUND_NAMES,
        freeze_audio_encoder=False,
        freeze_visual_classifier=False,
    )


def synthetic_batch(rng: np.random.Generator, processor, clips: int = 8):
    """Clips of the synthetic world with what is seen (every object, all seconds) and what is heard
    (the objects sounding in each second), as multi-hot targets over the 8 kinds."""
    pixels, features, seen, heard = [], [], [], []
    for _ in range(clips):
        count = int(rng.integers(2, 4))
        scene = sample_scene(rng, NUM_FRAMES, count, IMAGE_SIZE)
        sounding = sample_sounding(rng, "multi", NUM_FRAMES, count)
        frames = [render_frame(scene, second)[0] for second in range(NUM_FRAMES)]
        inputs = processor(
            frames=frames, audio=render_audio(scene, sounding, rng), sampling_rate=SAMPLING_RATE
        )
        pixels.append(inputs["pixel_values"][0])
        features.append(inputs["input_features"][0])
        visible = torch.zeros(NUM_FRAMES, NUM_KINDS)
        visible[:, torch.as_tensor(scene.kinds)] = 1
        audible = torch.zeros(NUM_FRAMES, NUM_KINDS)
        for second in range(NUM_FRAMES):
            audible[second, torch.as_tensor(scene.kinds[sounding[second]])] = 1
        seen.append(visible)
        heard.append(audible)
    return torch.stack(pixels), torch.stack(features), torch.stack(seen), torch.stack(heard)


def class_scores(model, pixels, features):
    """Visual logits (the head on the mean of the last backbone stage, as C3N computes them) and
    audio logits per frame, with gradients."""
    last_stage = model.backbone(pixels.flatten(0, 1)).feature_maps[-1]
    visual = model.visual_classifier(last_stage.mean(dim=(2, 3)))
    _, audio = model.encode_audio(features, "input_features", *pixels.shape[:2])
    return visual, audio.flatten(0, 1)


def train_tiny_c3n(folder: Path, steps: int = 1200, seed: int = 0) -> Path:
    """Train the tiny C3N's classification paths and save it (with its processor) to `folder`."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = C3NForAudioVisualSegmentation(tiny_c3n_config())
    model.set_label_similarity(torch.eye(NUM_KINDS))  # kind k makes sound k
    processor = processor_for(model.config, image_size=IMAGE_SIZE, num_frames=NUM_FRAMES)
    data = [synthetic_batch(rng, processor) for _ in range(60)]
    held_out = synthetic_batch(rng, processor, clips=32)
    parameters = [
        *model.backbone.parameters(),
        *model.visual_classifier.parameters(),
        *model.audio_encoder.parameters(),
    ]
    optimizer = torch.optim.Adam(parameters, 1e-3)
    model.train()
    for step in range(steps):
        pixels, features, seen, heard = data[step % len(data)]
        visual, audio = class_scores(model, pixels, features)
        loss = F.binary_cross_entropy_with_logits(visual, seen.flatten(0, 1))
        loss = loss + F.binary_cross_entropy_with_logits(audio, heard.flatten(0, 1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        pixels, features, seen, heard = held_out
        visual, audio = class_scores(model, pixels, features)
    # How often the best class is one seen / heard in that second, on clips not trained on.
    visual_hits = seen.flatten(0, 1).gather(1, visual.argmax(1, keepdim=True)).mean()
    audio_hits = heard.flatten(0, 1).gather(1, audio.argmax(1, keepdim=True)).mean()
    print(
        f"tiny C3N, held-out seconds: best visual class seen {visual_hits:.0%}, best audio class heard {audio_hits:.0%}"
    )
    # Frozen from now on, as in C3N's own training and inference.
    model.config.freeze_audio_encoder = model.config.freeze_visual_classifier = True
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def copy_pictures(source: Path, out_dir: Path, names: dict[str, str]) -> None:
    for name, target in names.items():
        shutil.copyfile(source / name, out_dir / target)
        print("wrote", out_dir / target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs" / "images", help="where the PNGs go")
    args = parser.parse_args()
    out_dir = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    pcmanet = ensure_demo_model()
    clip = example_clips()[EXAMPLE_CLIP]
    c3n = cache_dir() / "explain-tiny-c3n"
    if not (c3n / "config.json").is_file():
        train_tiny_c3n(c3n)

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        # Relative paths from the cache, so that titles name no folder of this machine.
        os.chdir(cache_dir())
        pcmanet, c3n, clip = (path.relative_to(cache_dir()) for path in (pcmanet, c3n, clip))
        run = pcmanet.parent  # the demo's training run
        data = run.parent / "data"

        assert avs_models(["explain", str(pcmanet), str(clip), "--out", str(work / "pcmanet")]) == 0
        copy_pictures(
            work / "pcmanet",
            out_dir,
            {
                "confidence_masks.png": "explain_pcmanet_confidence_masks.png",
                "grouped_attention.png": "explain_pcmanet_grouped_attention.png",
            },
        )
        assert avs_models(["explain", str(c3n), str(clip), "--out", str(work / "c3n")]) == 0
        copy_pictures(
            work / "c3n",
            out_dir,
            {
                "consensus.png": "explain_c3n_consensus.png",
                "spatial_attention.png": "explain_c3n_spatial_attention.png",
            },
        )
        assert avs_models(["plot", str(run), "--out", str(work / "plots")]) == 0
        copy_pictures(
            work / "plots",
            out_dir,
            {
                "training_kept_tokens.png": "explain_training_kept_tokens.png",
                "training_loss.png": "explain_training_loss.png",
                "training_validation.png": "explain_training_validation.png",
            },
        )
        sweep = ["--noise-snr", "20", "10", "0", "-10", "-20", "--frame-noise-snr", "30", "20", "10"]
        evaluate = [
            "evaluate",
            str(pcmanet),
            str(data),
            "--subset",
            "ms3",
            *sweep,
            "--plot",
            str(work / "noise"),
        ]
        assert avs_models(evaluate) == 0
        copy_pictures(
            work / "noise",
            out_dir,
            {
                "robustness.png": "explain_robustness.png",
                "robustness_frames_audio_noise.png": "explain_robustness_frames_audio_noise.png",
                "robustness_frames_frame_noise.png": "explain_robustness_frames_frame_noise.png",
            },
        )


if __name__ == "__main__":
    main()
