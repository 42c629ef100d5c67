"""Data benchmark: the synthetic generator, the Parquet export and the collator, at 224x224.

Prints, as JSON and as a Markdown table, per subset: videos written per minute by
`make_synthetic_avsbench` and their size on disk; videos exported per second by
`export_avsbench` and its peak memory above the memory in use before the export began, for a
small and a 4x larger set (bounded memory shows as the same growth for both); clips per second
through `AVSBenchCollator` (frames to 224x224, VGGish log-mel) from the stock `load_dataset`.

    python benchmarks/bench_data.py --videos 100 --json data.json --markdown data.md

Each export runs in its own process so that its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench_inference import machine_info, run_child, write_report  # benchmarks/ is on sys.path

from avs_models.data import AVSBenchCollator, export_avsbench, make_synthetic_avsbench
from avs_models.data.avsbench import SUBSETS

SIZE = 224


def process_memory_mib(field: str) -> float:
    """`VmRSS` (memory this process holds now) or `VmHWM` (its peak since the last reset), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_memory() -> None:
    """Start the peak (`VmHWM`) afresh at the current resident size (Linux 4.0+).

    Without this the peak would include the transient memory of importing the package, which
    is larger than the export's and grows as the package does."""
    Path("/proc/self/clear_refs").write_text("5")


def folder_mib(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 2**20


def measure_export(raw_dir: str, subset: str, out_dir: str) -> dict:
    """Child process: export one subset, report the time and the memory growth.

    The libraries the export loads on first use (`datasets`, `pyarrow.parquet`) are imported
    before the baseline, so the growth is the export's own working memory, not a one-off import.
    """
    import datasets  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    reset_peak_memory()
    before = process_memory_mib("VmRSS")
    start = time.perf_counter()
    report = export_avsbench(raw_dir, out_dir, subsets=[subset], max_shard_bytes=64 * 2**20, progress=False)
    seconds = time.perf_counter() - start
    videos = sum(report.written[subset].values())
    return {
        "videos": videos,
        "videos_per_second": videos / seconds,
        "baseline_mib": before,
        "peak_growth_mib": process_memory_mib("VmHWM") - before,
        "parquet_mib": folder_mib(Path(out_dir)),
    }


def collate_clips_per_second(export_dir: Path, subset: str, batch_size: int = 4) -> float:
    import datasets

    train = datasets.load_dataset(str(export_dir), subset, split="train")
    collate = AVSBenchCollator(subset, image_size=SIZE)
    count = (len(train) // batch_size) * batch_size
    start = time.perf_counter()
    for first in range(0, count, batch_size):
        collate([train[index] for index in range(first, first + batch_size)])
    return count / (time.perf_counter() - start)


def measure(subset: str, videos: int, work: Path) -> dict:
    row = {"subset": subset}
    for name, count in (("small", videos), ("large", 4 * videos)):
        raw = work / f"{subset}-{name}"
        start = time.perf_counter()
        subset_dir = make_synthetic_avsbench(raw, subset, count, seed=0, image_size=SIZE)
        if name == "small":
            row["generated_per_minute"] = 60 * count / (time.perf_counter() - start)
            row["raw_mib_per_video"] = folder_mib(subset_dir) / count
        export = run_child(
            __file__, "--export-child", str(raw), subset, str(work / f"{subset}-{name}-parquet")
        )
        row[f"export_{name}"] = export
    row["collate_clips_per_second"] = collate_clips_per_second(work / f"{subset}-small-parquet", subset)
    return row


def to_markdown(results: list[dict], machine: dict) -> str:
    lines = [
        f"Data pipeline at {SIZE}x{SIZE}, {machine['threads']} threads, {machine['processor']}, torch {machine['torch']}.",
        "",
        (
            "| subset | generated (videos/min) | raw MiB/video | export (videos/s) "
            "| export peak growth, N / 4N videos (MiB) | Parquet MiB/video | collate (clips/s) |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results:
        small, large = row["export_small"], row["export_large"]
        lines.append(
            f"| {row['subset']} | {row['generated_per_minute']:.0f} | {row['raw_mib_per_video']:.2f} "
            f"| {small['videos_per_second']:.1f} | {small['peak_growth_mib']:.0f} ({small['videos']}) / "
            f"{large['peak_growth_mib']:.0f} ({large['videos']}) | {small['parquet_mib'] / small['videos']:.2f} "
            f"| {row['collate_clips_per_second']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=100, help="videos in the small set (the large has 4x)")
    parser.add_argument("--subset", choices=SUBSETS, action="append", help="subset (repeatable; default all)")
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--markdown", help="write the Markdown table to this file")
    parser.add_argument("--export-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.export_child:  # child process: one export, result on stdout
        print(json.dumps(measure_export(*args.export_child)))
        return
    with tempfile.TemporaryDirectory() as work:
        results = [measure(subset, args.videos, Path(work)) for subset in args.subset or SUBSETS]
    machine = machine_info()
    write_report(
        {"machine": machine, "results": results}, to_markdown(results, machine), args.json, args.markdown
    )


if __name__ == "__main__":
    main()
