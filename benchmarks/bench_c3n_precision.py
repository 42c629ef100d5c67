"""Half precision vs float32 for full-size C3N: how often the unified label of a frame changes, and
how many mask pixels agree.

The model is the official C3N (PVT-v2-b5 or Swin-B, VGGish width) with the deterministic weights of
a parity fixture, converted by the project's script, and the fixture's similarity matrix: its
consensus depends on the frame (the fixture's 10 frames get 7 distinct labels). It runs on the
fixture's frames and on random clips (normal pixel values, audio logits drawn like the fixture's),
in float32 and then in float16 and bfloat16, both as `model.to(dtype)` and under
`torch.autocast`, and compares the unified labels, the masks and the CCAM channel weights (cosine
similarity to float32's, per stage). Accuracy only: no timings.

    python benchmarks/bench_c3n_precision.py --fixture ../shared/parity/c3n_pvtv2b5_vggish_s4 --random-clips 4
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from parity_weights import deterministic_state_dict  # noqa: E402  (tests/parity_weights.py)

from avs_models import AutoModelForAudioVisualSegmentation  # noqa: E402
from avs_models.models.c3n.convert_c3n_original_to_hf import main as convert_main  # noqa: E402

FRAMES, SIZE = 5, 224
SETTINGS = {
    "float16": ("to", torch.float16),
    "bfloat16": ("to", torch.bfloat16),
    "float16-autocast": ("autocast", torch.float16),
    "bfloat16-autocast": ("autocast", torch.bfloat16),
}


def load_official_model(fixture: Path) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    meta = json.loads((fixture / "meta.json").read_text())
    tensors = load_file(fixture / "tensors.safetensors")
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "official.pth"
        torch.save(deterministic_state_dict(meta["state_dict_spec"]), checkpoint)
        convert_main(["--checkpoint", str(checkpoint), "--output-dir", str(Path(folder) / "c3n")])
        model = AutoModelForAudioVisualSegmentation.from_pretrained(Path(folder) / "c3n").eval()
    model.set_label_similarity(tensors["similarity_matrix"])
    return model, tensors


def clips(tensors: dict[str, torch.Tensor], random_clips: int) -> list[dict[str, torch.Tensor]]:
    """The fixture's clips, then random ones."""
    images, audio, audio_logits = tensors["images"], tensors["audio"], tensors["audio_logits"]
    result = [
        {
            "pixel_values": images[start : start + FRAMES][None],
            "audio_embeds": audio[start : start + FRAMES][None],
            "audio_logits": audio_logits[start : start + FRAMES][None],
        }
        for start in range(0, len(images), FRAMES)
    ]
    generator = torch.Generator().manual_seed(0)
    mean, std = audio_logits.mean(), audio_logits.std()
    for _ in range(random_clips):
        result.append(
            {
                "pixel_values": torch.randn(1, FRAMES, 3, SIZE, SIZE, generator=generator),
                "audio_embeds": torch.randn(1, FRAMES, audio.shape[-1], generator=generator),
                "audio_logits": mean
                + std * torch.randn(1, FRAMES, audio_logits.shape[-1], generator=generator),
            }
        )
    return result


def run(model, inputs: dict[str, torch.Tensor], mode: str, dtype: torch.dtype):
    with torch.no_grad():
        if mode == "autocast":
            with torch.autocast("cpu", dtype=dtype):
                return model(**inputs)
        return model(**inputs)


def measure(fixture: Path, random_clips: int) -> dict:
    model, tensors = load_official_model(fixture)
    inputs = clips(tensors, random_clips)
    references = [run(model, clip, "to", torch.float32) for clip in inputs]
    results = {"fixture": fixture.name, "clips": len(inputs), "frames": len(inputs) * FRAMES}
    for name, (mode, dtype) in SETTINGS.items():
        half = copy.deepcopy(model).to(dtype) if mode == "to" else model
        changed = agreement = 0.0
        worst, finite = 1.0, True
        ccam_cosine = [1.0] * 4
        for index, (clip, reference) in enumerate(zip(inputs, references)):
            output = run(half, clip, mode, dtype)
            print(f"{name}: clip {index + 1}/{len(inputs)} done", file=sys.stderr, flush=True)
            finite &= bool(torch.isfinite(output.logits).all())
            changed += int((output.unified_labels != reference.unified_labels).sum())
            frame_agreement = ((output.logits > 0) == (reference.logits > 0)).float().mean(dim=(2, 3, 4))
            agreement += float(frame_agreement.sum())
            worst = min(worst, float(frame_agreement.min()))
            for stage, (ours, theirs) in enumerate(zip(output.ccam_weights, reference.ccam_weights)):
                cosine = torch.nn.functional.cosine_similarity(ours.float(), theirs, dim=-1)
                ccam_cosine[stage] = min(ccam_cosine[stage], float(cosine.min()))
        frames = len(inputs) * FRAMES
        results[name] = {
            "finite": finite,
            "unified_label_change_rate": changed / frames,
            "mask_agreement_mean": agreement / frames,
            "mask_agreement_worst_frame": worst,
            "ccam_weights_cosine_worst_frame_per_stage": ccam_cosine,
        }
        print(name, json.dumps(results[name]), flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixture", type=Path, required=True, help="a C3N parity fixture folder")
    parser.add_argument("--random-clips", type=int, default=4)
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args(argv)
    results = measure(args.fixture, args.random_clips)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
