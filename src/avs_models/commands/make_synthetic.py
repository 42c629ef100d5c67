"""`avs-models make-synthetic`: write a synthetic AVS data set in the official AVSBench layout."""

from __future__ import annotations

import argparse

from avs_models.data.avsbench import SUBSETS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "make-synthetic",
        help="write a synthetic audio-visual segmentation data set in the official AVSBench layout",
        description=(
            "Videos of moving shapes whose kinds each have their own sound; the masks are the objects "
            "sounding in each second. Written as AVSBench S4, MS3 or AVSS files under OUT_DIR."
        ),
    )
    parser.add_argument(
        "out_dir", metavar="OUT_DIR", help="folder to write the data set into (created if missing)"
    )
    parser.add_argument("--subset", choices=SUBSETS, required=True, help="which AVSBench subset layout to write")
    parser.add_argument("--videos", type=int, default=100, help="number of videos (default 100)")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed writes the same files (default 0)"
    )
    parser.add_argument("--image-size", type=int, default=224, help="frame side in pixels (default 224)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from avs_models.data.synthetic import make_synthetic_avsbench

    subset_dir = make_synthetic_avsbench(
        args.out_dir, args.subset, args.videos, args.seed, image_size=args.image_size, progress=True
    )
    print(f"wrote {args.videos} synthetic {args.subset} videos to {subset_dir}")
    return 0
