"""`avs-models prepare-avsbench`: export AVSBench from the official layout to Parquet for `load_dataset`."""

from __future__ import annotations

import argparse
from pathlib import Path

from avs_models.data.avsbench import SUBSETS, resolve_subset_dir


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare-avsbench",
        help="export AVSBench (official layout) to a Hub-format Parquet dataset",
        description=(
            "Reads RAW_DIR (the official release, or its Single-source / Multi-sources / AVSS folder) and "
            "writes Parquet shards plus a README to OUT_DIR; then datasets.load_dataset(OUT_DIR, 's4') opens it."
        ),
    )
    parser.add_argument("raw_dir", metavar="RAW_DIR", help="the AVSBench release in its official layout")
    parser.add_argument(
        "out_dir", metavar="OUT_DIR", help="folder for the Parquet dataset (created if missing)"
    )
    parser.add_argument(
        "--subset",
        choices=SUBSETS,
        action="append",
        help="subset to export (repeatable; default: every subset found in RAW_DIR)",
    )
    parser.add_argument(
        "--max-shard-mb", type=int, default=256, help="Parquet shard size in MB (default 256)"
    )
    parser.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help=(
            "raise (default): stop at the first file or metadata row that breaks a rule, naming the file "
            "and the rule; skip: leave such videos out and list them in OUT_DIR/preparation_report.md/.json"
        ),
    )
    parser.add_argument(
        "--official-log-mel",
        action="store_true",
        help="also export the release's pickled log-mels (read as tensors only); off by default",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from avs_models.data.export import REPORT_MARKDOWN, export_avsbench

    subsets = args.subset or _subsets_found(args.raw_dir)
    report = export_avsbench(
        args.raw_dir,
        args.out_dir,
        subsets=subsets,
        on_error=args.on_error,
        max_shard_bytes=args.max_shard_mb * 1024 * 1024,
        load_official_log_mel=args.official_log_mel,
    )
    print(report.summary_table())
    skipped = sum(len(subset.skipped) for subset in report.subsets.values())
    if skipped:
        print(
            f"skipped {skipped}: each with its reason in {Path(args.out_dir) / REPORT_MARKDOWN} (and .json)"
        )
    print(f"wrote {args.out_dir}; open it with datasets.load_dataset({str(args.out_dir)!r}, CONFIG)")
    return 0


def _subsets_found(raw_dir: str) -> list[str]:
    """The subsets whose metadata file is in RAW_DIR or its official sub-folder."""
    found = []
    for subset in SUBSETS:
        try:
            resolve_subset_dir(raw_dir, subset)
        except FileNotFoundError:
            continue
        found.append(subset)
    if not found:
        raise FileNotFoundError(
            f"{raw_dir} holds no AVSBench subset: none of Single-source/s4_meta_data.csv, "
            "Multi-sources/ms3_meta_data.csv, AVSS/metadata.csv (nor one of them in RAW_DIR itself)"
        )
    return found
