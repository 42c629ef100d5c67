"""Accuracy and speed of the inference paths of `optimize_for_inference`: fp32, torch.compile (with and
without freezing), bf16 autocast, compile + bf16 and int8, on the demo-trained PCMANet and on a
full-size PCMANet-R50.

Part 1, accuracy and speed on real predictions: the small PCMANet of `avs-models demo`, trained on
synthetic MS3 clips (the web demo's cached model, trained first if the cache has none; or
`--demo-dir`, a folder `avs-models demo --out` wrote), scores its held-out test clips in every
setting: mIoU and F-score (official definition), the share of mask pixels equal to fp32 eager, and
the latency of one clip against fp32 eager.

Part 2, speed at full size: PCMANet-R50 (random weights; the official S4 settings) on one clip of
5 frames at 224x224 with VGGish embeddings; masks compared with fp32 eager on that clip (random
weights: a speed check, the accuracy figures are part 1's).

Timings are interleaved (each round runs every setting once, so a slow spell of a shared machine
hits all of them alike) and the medians are reported; the first call of each setting compiles
(minutes on a CPU) and is not timed. int8 calibrates on the demo's training clips (part 1) or on
random clips (part 2) and runs compiled, which is what makes it fast. Runs on the GPU where there is
one (`--device cuda`), where int8 is left out (it is an x86 CPU path) and fp16 is added.

    python benchmarks/bench_precision.py --threads 1 --runs 10 --json precision.json --markdown precision.md
    python benchmarks/bench_precision.py --small --runs 2     # smoke test: tiny models, minutes
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch
from bench_inference import (  # benchmarks/ is on sys.path when run as a script
    FRAMES,
    SIZE,
    interleaved_median_seconds,
    machine_info,
    write_report,
)
from bench_inference import VARIANTS as FULL_SIZE_VARIANTS

from avs_models import AudioVisualProcessor, AutoModelForAudioVisualSegmentation
from avs_models.data import AVSBenchCollator
from avs_models.evaluation import evaluate_split
from avs_models.inference_optimization import optimize_for_inference
from avs_models.models.inputs import model_inputs
from avs_models.training import AVSBenchSplit

# Setting name -> optimize_for_inference options; the targets (speed-up vs fp32 eager,
# largest mIoU change in points, masks equal to fp32 eager).
SETTINGS = {
    "fp32": {},
    "compile": {"compile": True, "freezing": False},
    "compile + freezing": {"compile": True},
    "bf16": {"precision": "bf16"},
    "compile + bf16": {"precision": "bf16", "compile": True},
    "int8": {"precision": "int8", "compile": True},
}
GPU_SETTINGS = {"fp16": {"precision": "fp16"}, "compile + fp16": {"precision": "fp16", "compile": True}}
TARGETS = {
    "compile + freezing": "masks equal",
    "bf16": ">= 1.8x, <= 0.5 point",
    "compile + bf16": ">= 2.3x, <= 0.5 point",
    "int8": ">= 3x, <= 1 point",
}
CALIBRATION_CLIPS = 8


def settings_for(device: torch.device) -> dict[str, dict]:
    if device.type == "cuda":
        return {**{k: v for k, v in SETTINGS.items() if k != "int8"}, **GPU_SETTINGS}
    return SETTINGS


def prepared(model, options: dict, calibration: list[dict] | None, processor=None):
    """The setting's InferenceModel on a copy of the model: every compiled setting compiles its own."""
    return optimize_for_inference(
        copy.deepcopy(model) if options.get("compile") else model,
        **options,
        calibration=calibration if options.get("precision") == "int8" else None,
        processor=processor,
    )


class _RecordingLogits(torch.nn.Module):
    """Runs a model through `evaluate_split` and keeps the logits it returns (for the mask agreement)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.logits = model, []

    @property
    def config(self):
        return self.model.config

    def forward(self, **inputs):
        output = self.model(**inputs)
        self.logits.append(output.logits.detach().float().cpu())
        return output


def demo_model_and_data(demo_dir: Path | None, small: bool) -> tuple[Path, Path]:
    """The demo-trained model's folder and the demo's data folder."""
    if demo_dir is None and not small:
        from avs_models.app import ensure_demo_model

        model_dir = ensure_demo_model()
        return model_dir, model_dir.parents[1] / "data"
    if demo_dir is None:
        demo_dir = Path(tempfile.mkdtemp(prefix="bench_precision_demo_"))
    model_dir = demo_dir / "training" / "best"
    if not model_dir.is_dir():
        from avs_models.demo import run_demo

        options = {"num_videos": 10, "num_epochs": 1, "image_size": 32, "width": 8} if small else {}
        run_demo(demo_dir, **options)
    return model_dir, demo_dir / "data"


def demo_accuracy_and_speed(args, device: torch.device) -> list[dict]:
    model_dir, data_dir = demo_model_and_data(args.demo_dir, args.small)
    model = AutoModelForAudioVisualSegmentation.from_pretrained(model_dir).to(device).eval()
    processor = AudioVisualProcessor.from_pretrained(model_dir)
    collator = AVSBenchCollator.from_processor(processor, args.subset)

    def clip_inputs(example) -> dict:
        batch = collator([example])
        return {name: tensor.to(device) for name, tensor in model_inputs(batch).items()}

    train = AVSBenchSplit(data_dir, args.subset, "train")
    calibration = [clip_inputs(train[index]) for index in range(min(CALIBRATION_CLIPS, len(train)))]
    timed_clip = clip_inputs(AVSBenchSplit(data_dir, args.subset, "test")[0])

    rows, functions = [], []
    for name, options in settings_for(device).items():
        fast = prepared(model, options, calibration, processor)
        recording = _RecordingLogits(fast)
        result = evaluate_split(recording, data_dir, args.subset, "test", processor=processor)
        rows.append(
            {"setting": name, "miou": result["miou"], "fscore": result["fscore"], "logits": recording.logits}
        )
        functions.append(lambda fast=fast: fast(**timed_clip))
    _add_agreement_and_speed(rows, functions, args.runs, device)
    return rows


def full_size_speed(args, device: torch.device) -> list[dict]:
    torch.manual_seed(0)
    config = FULL_SIZE_VARIANTS["pcmanet-resnet50"]()
    if args.small:  # a tiny ResNet instead of ResNet-50, for the smoke test
        config.backbone_config.hidden_sizes, config.backbone_config.depths = [16, 32, 48, 64], [1, 1, 1, 1]
        config.backbone_config.embedding_size = 16
    model = AutoModelForAudioVisualSegmentation.from_config(config).to(device).eval()
    size = 64 if args.small else SIZE
    generator = torch.Generator().manual_seed(0)

    def clip():
        return {
            "pixel_values": torch.randn(1, FRAMES, 3, size, size, generator=generator).to(device),
            "audio_embeds": torch.randn(1, FRAMES, 128, generator=generator).to(device),
        }

    inputs, calibration = clip(), [clip() for _ in range(4)]
    rows, functions = [], []
    for name, options in settings_for(device).items():
        fast = prepared(model, options, calibration)
        rows.append({"setting": name, "logits": [fast(**inputs).logits.detach().float().cpu()]})
        functions.append(lambda fast=fast: fast(**inputs))
    _add_agreement_and_speed(rows, functions, args.runs, device)
    return rows


def _add_agreement_and_speed(rows: list[dict], functions: list, runs: int, device: torch.device) -> None:
    reference = torch.cat([logits[:, :, 0] > 0 for logits in rows[0]["logits"]])
    seconds = interleaved_median_seconds(functions, runs, device)
    for row, latency in zip(rows, seconds):
        masks = torch.cat([logits[:, :, 0] > 0 for logits in row.pop("logits")])
        row["masks_equal_to_fp32"] = (masks == reference).float().mean().item()
        row["latency_s"] = latency
        row["speedup"] = seconds[0] / latency
        row["target"] = TARGETS.get(row["setting"], "")


def to_markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [
        f"Measured on: {machine['processor']}, {machine['threads']} threads, torch {machine['torch']}.",
        "",
        f"Demo PCMANet, held-out synthetic {report['subset'].upper()} test clips (official mIoU / F):",
        "",
        "| setting | mIoU | F-score | mIoU change (points) | masks equal to fp32 | latency (ms) | speed-up | target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = report["demo"][0]["miou"]
    for row in report["demo"]:
        lines.append(
            f"| {row['setting']} | {row['miou']:.4f} | {row['fscore']:.4f} | {100 * (row['miou'] - base):+.2f} "
            f"| {100 * row['masks_equal_to_fp32']:.3f}% | {1e3 * row['latency_s']:.1f} | {row['speedup']:.2f}x "
            f"| {row['target']} |"
        )
    lines += [
        "",
        f"{report['full_size_model']}, one clip of {report['full_size_clip']} (random weights):",
        "",
        "| setting | masks equal to fp32 | latency (s) | speed-up |",
        "| --- | --- | --- | --- |",
    ]
    for row in report["full_size"]:
        lines.append(
            f"| {row['setting']} | {100 * row['masks_equal_to_fp32']:.3f}% | {row['latency_s']:.3f} "
            f"| {row['speedup']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed rounds (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--demo-dir", type=Path, help="a folder of `avs-models demo --out` (trained if empty)"
    )
    parser.add_argument(
        "--subset", default="ms3", choices=("s4", "ms3"), help="the demo's subset (default ms3)"
    )
    parser.add_argument(
        "--small", action="store_true", help="smoke test: a tiny demo model and a tiny ResNet"
    )
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--markdown", help="write the Markdown table to this file")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report = {
        "machine": machine_info(),
        "subset": args.subset,
        "small": args.small,
        "demo": demo_accuracy_and_speed(args, device),
        "full_size_model": "PCMANet (tiny ResNet, --small)" if args.small else "PCMANet-R50",
        "full_size_clip": f"{FRAMES} x 3 x {64 if args.small else SIZE} x {64 if args.small else SIZE}",
        "full_size": full_size_speed(args, device),
    }
    if device.type == "cuda":
        report["machine"]["device"] = torch.cuda.get_device_name(device)
    write_report(report, to_markdown(report), args.json, args.markdown)


if __name__ == "__main__":
    main()
