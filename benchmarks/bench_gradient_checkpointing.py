"""Training memory with and without gradient checkpointing: full-size PCMANet-R50 and C3N-PVT-v2-b5.

One training step (forward with labels, backward) on a batch of 4 clips of 5 frames at 224x224,
the papers' training clip. Prints, as JSON and a Markdown table, per model and setting: the peak
memory of the step (max RSS on CPU, the allocator's peak on CUDA), what the step added on top of
the model and its inputs, the median step time, and the loss (the same with and without, as the
checkpointed layers are recomputed, not approximated).

    python benchmarks/bench_gradient_checkpointing.py --json ckpt.json --markdown ckpt.md
    python benchmarks/bench_gradient_checkpointing.py --small --batch-size 1 --frames 2 --image-size 64  # smoke test

Each (model, setting) runs in its own process, so that a peak belongs to that run alone.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from bench_inference import machine_info, peak_memory_mib, run_child, write_report  # benchmarks/ is on sys.path

from avs_models import C3NConfig, C3NForAudioVisualSegmentation, PCMANetConfig, PCMANetForAudioVisualSegmentation
from avs_models.models.backbones import pvt_v2_b5_backbone_config, resnet50_backbone_config

# Full size: the official S4 settings. Small (`--small`): tiny backbones, for smoke tests only.
VARIANTS = {
    "pcmanet-resnet50": {
        "full": lambda: PCMANetConfig(backbone_config=resnet50_backbone_config(), avga_groups=4),
        "small": lambda: PCMANetConfig(
            backbone_config=resnet50_backbone_config(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]),
            hidden_size=16,
            avga_groups=4,
            qsca_num_heads=2,
            qsca_head_dim=8,
            qsca_pool_sizes=[8, 4, 2, 2],
        ),
    },
    "c3n-pvt-v2-b5": {
        "full": C3NConfig,
        "small": lambda: C3NConfig(
            backbone_config=pvt_v2_b5_backbone_config(
                depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 1, 1, 1]
            ),
            hidden_size=16,
            head_hidden_sizes=[8, 4],
        ),
    },
}
MODEL_CLASSES = {"pcmanet": PCMANetForAudioVisualSegmentation, "c3n": C3NForAudioVisualSegmentation}


def current_memory_mib(device: torch.device) -> float:
    """Memory in use now: the CUDA allocator's, or this process's resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("cannot read the resident memory of this process (/proc/self/status)")


def training_inputs(config, batch_size: int, frames: int, size: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "pixel_values": torch.randn(batch_size, frames, 3, size, size, generator=generator),
        "audio_embeds": torch.randn(batch_size, frames, config.audio_embed_dim, generator=generator),
        "labels": (torch.rand(batch_size, frames, size, size, generator=generator) > 0.5).float(),
    }
    if config.model_type == "c3n":
        inputs["audio_logits"] = torch.randn(batch_size, frames, config.num_audio_classes, generator=generator)
    return {name: tensor.to(device) for name, tensor in inputs.items()}


def measure(args) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = VARIANTS[args.variant]["small" if args.small else "full"]()
    model = MODEL_CLASSES[config.model_type](config).to(device).train()
    result = {
        "model": args.variant,
        "size": "small" if args.small else "full",
        "gradient_checkpointing": args.checkpointing,
        "device": args.device,
        "batch": f"{args.batch_size}x{args.frames}x{args.image_size}x{args.image_size}",
        "params_m": model.num_parameters() / 1e6,
    }
    if args.checkpointing:
        if not model.supports_gradient_checkpointing:
            return {**result, "unsupported": f"{type(model).__name__} does not support gradient checkpointing"}
        model.activation_checkpointing_enable()
    inputs = training_inputs(config, args.batch_size, args.frames, args.image_size, device)

    def step() -> float:
        model.zero_grad(set_to_none=True)
        loss = model(**inputs).loss
        loss.backward()
        return loss.item()

    baseline_mib = current_memory_mib(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timings, losses = [], []
    for _ in range(args.steps):
        torch.manual_seed(0)  # the same dropout draws in every step and setting
        start = time.perf_counter()
        losses.append(step())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings.append(time.perf_counter() - start)
    peak_mib = peak_memory_mib(device)
    return {
        **result,
        "peak_memory_mib": peak_mib,
        "step_memory_mib": peak_mib - baseline_mib,
        "step_s": sorted(timings)[len(timings) // 2],
        "loss": losses[0],
    }


def to_markdown(results: list[dict], machine: dict) -> str:
    lines = [
        f"Measured on: {machine['processor']}, {machine['threads']} threads, torch {machine['torch']}.",
        "",
        "| model | batch (B x T x H x W) | checkpointing | peak memory (MiB) | step adds (MiB) | step (s) | loss |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results:
        if "unsupported" in row:
            lines.append(f"| {row['model']} ({row['size']}) | {row['batch']} | yes | {row['unsupported']} | | | |")
            continue
        lines.append(
            f"| {row['model']} ({row['size']}) | {row['batch']} | {'yes' if row['gradient_checkpointing'] else 'no'} "
            f"| {row['peak_memory_mib']:.0f} | {row['step_memory_mib']:.0f} | {row['step_s']:.2f} | {row['loss']:.5f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=4, help="clips per batch (default 4)")
    parser.add_argument("--frames", type=int, default=5, help="frames per clip (default 5)")
    parser.add_argument("--image-size", type=int, default=224, help="frame side (default 224)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per setting (median time reported)")
    parser.add_argument("--small", action="store_true", help="tiny models, for a smoke test of this script")
    parser.add_argument("--models", nargs="+", choices=sorted(VARIANTS), default=sorted(VARIANTS))
    parser.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--markdown", help="write the Markdown table to this file")
    args = parser.parse_args(argv)

    if args.variant:  # child process: one model in one setting, result on stdout
        print(json.dumps(measure(args)))
        return
    shared = [
        "--device", args.device, "--batch-size", str(args.batch_size), "--frames", str(args.frames),
        "--image-size", str(args.image_size), "--steps", str(args.steps), *(["--small"] if args.small else []),
    ]  # fmt: skip
    results = [
        run_child(__file__, "--variant", variant, *shared, *(["--checkpointing"] if checkpointing else []))
        for variant in args.models
        for checkpointing in (False, True)
    ]
    machine = machine_info()
    write_report({"machine": machine, "results": results}, to_markdown(results, machine), args.json, args.markdown)


if __name__ == "__main__":
    main()
