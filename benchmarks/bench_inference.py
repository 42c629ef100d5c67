"""Inference benchmark of full-size PCMANet, AVSegFormer and TPAVI on one 5-frame 224x224 clip.

All come with ResNet-50 and PVT-v2-b5 backbones. Prints, as JSON and as a Markdown table: parameters, GFLOPs (torch's FlopCounterMode), median
latency, peak memory, the sgemm-bound floor of this machine, and for PCMANet the time of the four
QSCA modules at kept-token ratios of 100/50/10%.

    python benchmarks/bench_inference.py --runs 10 --json bench.json --markdown table.md

Each model is measured in its own process so that peak memory (max RSS on CPU, the allocator's
peak on CUDA) belongs to that model alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from avs_models import AutoModelForAudioVisualSegmentation, AVSegFormerConfig, PCMANetConfig, TPAVIConfig
from avs_models.models.backbones import pvt_v2_b5_backbone_config, resnet50_backbone_config

# The official settings of the two S4 checkpoints.
VARIANTS = {
    "pcmanet-resnet50": lambda: PCMANetConfig(backbone_config=resnet50_backbone_config(), avga_groups=4),
    "pcmanet-pvt-v2-b5": lambda: PCMANetConfig(backbone_config=pvt_v2_b5_backbone_config(), avga_groups=8),
    # The official AVSegFormer head (the same for every subset); audio as VGGish embeddings.
    "avsegformer-resnet50": lambda: AVSegFormerConfig(backbone_config=resnet50_backbone_config()),
    "avsegformer-pvt-v2-b5": lambda: AVSegFormerConfig(backbone_config=pvt_v2_b5_backbone_config()),
    # The AVSBench baseline, TPAVI on all four stages (S4/MS3 head).
    "tpavi-resnet50": lambda: TPAVIConfig(backbone_config=resnet50_backbone_config()),
    "tpavi-pvt-v2-b5": lambda: TPAVIConfig(backbone_config=pvt_v2_b5_backbone_config()),
}
FRAMES, SIZE = 5, 224


def interleaved_median_seconds(functions, runs: int, device: torch.device) -> list[float]:
    """Median time of each function after a warm-up, timing them in turn within every run so
    that a slow spell of a shared machine hits all of them alike."""
    for function in functions:
        function()  # warm-up
    timings = [[] for _ in functions]
    for _ in range(runs):
        for function, function_timings in zip(functions, timings):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            function()
            if device.type == "cuda":
                torch.cuda.synchronize()
            function_timings.append(time.perf_counter() - start)
    return [statistics.median(function_timings) for function_timings in timings]


def median_seconds(function, runs: int, device: torch.device) -> float:
    return interleaved_median_seconds([function], runs, device)[0]


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory of this process so far: the CUDA allocator's peak on GPU, max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_report(report, table: str | None, json_path: str | None, markdown_path: str | None) -> None:
    """Print the results as JSON (and the Markdown table), and write them where asked."""
    print(json.dumps(report, indent=2))
    if table is not None:
        print(table)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2))
    if markdown_path and table is not None:
        Path(markdown_path).write_text(table)


def processor_name() -> str:
    """The processor as `lscpu` names it ("model name" of /proc/cpuinfo), else the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """What the figures were measured on: processor, torch threads and torch version."""
    return {
        "processor": processor_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def run_child(script: str, *arguments: str) -> dict:
    """Run `script` with `arguments` in a fresh Python process (so that its peak memory is its own)
    and return the JSON result it prints on its last line; its error output if it fails."""
    child = subprocess.run([sys.executable, script, *arguments], check=False, capture_output=True, text=True)
    if child.returncode != 0:
        sys.exit(f"{Path(script).name} {' '.join(arguments)} failed:\n{child.stderr.strip()}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def sgemm_gflops(device: torch.device, size: int = 2048, runs: int = 10) -> float:
    """Sustained fp32 matrix-multiply speed of this machine, the bound for a conv-heavy forward."""
    left, right = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    seconds = median_seconds(lambda: left @ right, runs, device)
    return 2 * size**3 / seconds / 1e9


def qsca_seconds(model, kept_ratio: float, runs: int, device: torch.device) -> float:
    """Time of the four QSCA modules on full-size stage maps with a random mask of `kept_ratio`."""
    generator = torch.Generator().manual_seed(0)
    channels = model.config.hidden_size
    sides = [SIZE // 4, SIZE // 8, SIZE // 16, SIZE // 32]
    visual = [torch.randn(FRAMES, channels, side, side, generator=generator).to(device) for side in sides]
    audio = torch.randn(FRAMES, channels, generator=generator).to(device)
    masks = [
        (torch.rand(FRAMES, 1, size, size, generator=generator) < kept_ratio).float().to(device)
        for size in model.config.qsca_pool_sizes
    ]

    def run_all():
        for stage, module in enumerate(model.cross_attention):
            module(visual[stage], audio, FRAMES, None if stage == 3 else masks[stage])

    with torch.no_grad():
        return median_seconds(run_all, runs, device)


def measure(variant: str, runs: int, device_name: str) -> dict:
    device = torch.device(device_name)
    torch.manual_seed(0)
    model = AutoModelForAudioVisualSegmentation.from_config(VARIANTS[variant]()).eval().to(device)
    inputs = {
        "pixel_values": torch.randn(1, FRAMES, 3, SIZE, SIZE, device=device),
        "audio_embeds": torch.randn(1, FRAMES, 128, device=device),
    }
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            model(**inputs)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        latency = median_seconds(lambda: model(**inputs), runs, device)
    peak_mib = peak_memory_mib(device)
    gflops = counter.get_total_flops() / 1e9
    qsca = None
    if model.config.model_type == "pcmanet":
        qsca = {f"{int(ratio * 100)}%": qsca_seconds(model, ratio, runs, device) for ratio in (1.0, 0.5, 0.1)}
    return {
        "model": variant,
        "device": device_name,
        "params_m": model.num_parameters() / 1e6,
        "gflops": gflops,
        "latency_s": latency,
        "peak_memory_mib": peak_mib,
        "qsca_s": qsca,
        "qsca_10_over_100": qsca["10%"] / qsca["100%"] if qsca else None,
    }


def to_markdown(results: list[dict], machine: dict) -> str:
    lines = [
        (
            f"Measured on: {machine['processor']}, {machine['threads']} threads, torch {machine['torch']}; "
            f"sgemm {machine['sgemm_gflops']:.0f} GFLOP/s."
        ),
        "",
        (
            "| model | params (M) | GFLOPs | latency (s) | sgemm floor (s) | latency / floor | peak memory (MiB) "
            "| QSCA 100% (ms) | QSCA 50% (ms) | QSCA 10% (ms) | QSCA 10% / 100% |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results:
        floor = row["gflops"] / machine["sgemm_gflops"]
        qsca = row["qsca_s"]
        qsca_cells = (
            f"{qsca['100%'] * 1e3:.1f} | {qsca['50%'] * 1e3:.1f} | {qsca['10%'] * 1e3:.1f} "
            f"| {row['qsca_10_over_100']:.2f}"
            if qsca
            else "— | — | — | —"
        )
        lines.append(
            f"| {row['model']} | {row['params_m']:.2f} | {row['gflops']:.1f} | {row['latency_s']:.3f} | {floor:.3f} "
            f"| {row['latency_s'] / floor:.2f} | {row['peak_memory_mib']:.0f} | {qsca_cells} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per measurement (median reported)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--markdown", help="write the Markdown table to this file")
    args = parser.parse_args(argv)

    if args.variant:  # child process: one model, result on stdout
        print(json.dumps(measure(args.variant, args.runs, args.device)))
        return
    results = [
        run_child(__file__, "--variant", variant, "--runs", str(args.runs), "--device", args.device)
        for variant in VARIANTS
    ]
    machine = {**machine_info(), "sgemm_gflops": sgemm_gflops(torch.device(args.device))}
    write_report(
        {"machine": machine, "results": results}, to_markdown(results, machine), args.json, args.markdown
    )


if __name__ == "__main__":
    main()
