"""Evaluation benchmark: the official F-score of one frame, per-threshold loop vs level counting.

The official F-score compares every pixel with 255 thresholds. The metric counts instead how many
thresholds each pixel reaches (one sorted search) and sums histograms of these levels, which gives
the same numbers (`tests/test_metrics.py` checks equality). Prints, as JSON and a Markdown table,
per frame size: milliseconds per frame of both formulations and of `BinaryMaskMetric.update` per
5-frame clip (sigmoid, label checks, IoUs and F curves).

    python benchmarks/bench_evaluation.py --sizes 224 --runs 20 --json evaluation.json --markdown evaluation.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from bench_inference import machine_info, median_seconds, write_report  # benchmarks/ is on sys.path

from avs_models.metrics import BinaryMaskMetric, _binary_scores

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from metric_reference import per_threshold_loop_scores

FRAMES = 5


def measure(size: int, runs: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, FRAMES, size, size, generator=generator) * 3
    labels = (torch.rand(1, FRAMES, size, size, generator=generator) > 0.7).float()
    probabilities, target = torch.sigmoid(logits[0, 0]), labels[0, 0]
    loop = median_seconds(lambda: per_threshold_loop_scores(probabilities, target), runs, torch.device("cpu"))
    counting = median_seconds(
        lambda: _binary_scores(probabilities[None], target[None]), runs, torch.device("cpu")
    )
    assert _binary_scores(probabilities[None], target[None])[0] == per_threshold_loop_scores(
        probabilities, target
    )
    update = median_seconds(lambda: BinaryMaskMetric().update(logits, labels), runs, torch.device("cpu"))
    return {
        "size": size,
        "loop_ms_per_frame": 1000 * loop,
        "counting_ms_per_frame": 1000 * counting,
        "speedup": loop / counting,
        "update_ms_per_clip": 1000 * update,
    }


def to_markdown(results: list[dict], machine: dict) -> str:
    lines = [
        f"Official F-score, {machine['threads']} threads, {machine['processor']}, torch {machine['torch']}.",
        "",
        "| frame | per-threshold loop (ms/frame) | level counting (ms/frame) | speed-up | metric update (ms/clip of 5) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in results:
        lines.append(
            f"| {row['size']}x{row['size']} | {row['loop_ms_per_frame']:.2f} | {row['counting_ms_per_frame']:.2f} "
            f"| {row['speedup']:.1f}x | {row['update_ms_per_clip']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[224], help="frame sides in pixels (default 224)"
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--markdown", help="write the Markdown table to this file")
    args = parser.parse_args(argv)
    results = [measure(size, args.runs) for size in args.sizes]
    machine = machine_info()
    write_report(
        {"machine": machine, "results": results}, to_markdown(results, machine), args.json, args.markdown
    )


if __name__ == "__main__":
    main()
