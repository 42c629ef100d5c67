"""Inference benchmark of full-size C3N (PVT-v2-b5 and Swin-B, VGGish-width audio) on one 5-frame
224x224 clip with precomputed audio embeddings and AudioSet logits.

Prints JSON per variant: parameters, GFLOPs of the whole inference call (torch's FlopCounterMode;
it includes the CCAM gradient, which the model computes at inference), median latency under
`torch.no_grad()`, and peak memory (max RSS on CPU, the allocator's peak on CUDA).

    python benchmarks/bench_c3n.py --runs 5 --json c3n_bench.json

Each variant runs in its own process so that peak memory belongs to that model alone.
"""

from __future__ import annotations

import argparse
import json

import torch
from bench_inference import (  # benchmarks/ is on sys.path when run as a script
    median_seconds,
    peak_memory_mib,
    processor_name,
    run_child,
)
from torch.utils.flop_counter import FlopCounterMode

from avs_models import C3NConfig, C3NForAudioVisualSegmentation
from avs_models.models.backbones import pvt_v2_b5_backbone_config, swin_base_backbone_config

VARIANTS = {
    "c3n-pvt-v2-b5": lambda: C3NConfig(backbone_config=pvt_v2_b5_backbone_config()),
    "c3n-swin-b": lambda: C3NConfig(backbone_config=swin_base_backbone_config()),
}
FRAMES, SIZE = 5, 224


def measure(variant: str, runs: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = C3NForAudioVisualSegmentation(VARIANTS[variant]()).to(device).eval()
    model.set_label_similarity(torch.rand(1000, 527))
    inputs = {
        "pixel_values": torch.randn(1, FRAMES, 3, SIZE, SIZE, device=device),
        "audio_embeds": torch.randn(1, FRAMES, 128, device=device),
        "audio_logits": torch.randn(1, FRAMES, 527, device=device),
    }

    def forward():
        with torch.no_grad():
            return model(**inputs)

    counter = FlopCounterMode(display=False)
    with counter:
        forward()
    latency = median_seconds(forward, runs, device)
    peak_mib = peak_memory_mib(device)
    return {
        "variant": variant,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else processor_name(),
        "threads": torch.get_num_threads(),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "gflops": counter.get_total_flops() / 1e9,
        "median_latency_s": latency,
        "peak_memory_mib": peak_mib,
        "clip": f"1 x {FRAMES} x 3 x {SIZE} x {SIZE}",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="measure one variant in this process")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="write all results to this file")
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(measure(args.variant, args.runs, torch.device(args.device))))
        return
    results = []
    for variant in VARIANTS:
        results.append(
            run_child(__file__, "--variant", variant, "--runs", str(args.runs), "--device", args.device)
        )
        print(json.dumps(results[-1]))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
