"""`avs-models explain MODEL_DIR VIDEO --out DIR`: the papers' figures of a model on one clip of a video."""

from __future__ import annotations

import argparse

from avs_models.commands.arguments import non_negative_int


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="pictures of what a PCMANet or C3N computes on one clip of a video (the papers' figures)",
        description=(
            "Runs the model in MODEL_DIR (with its saved AudioVisualProcessor) on one clip of VIDEO and draws its "
            "intermediate outputs into OUT_DIR. PCMANet: confidence_masks.png (the confidence masks of each stage and "
            "the kept-token ratios, paper Fig. 5) and grouped_attention.png (AVGA cosine-similarity maps per stage "
            "and group, Fig. 9). C3N: consensus.png (top-5 audio and visual classes, re-weighted confidences and the "
            "unified label per frame, Fig. 6) and spatial_attention.png (CCAM heat maps per stage, Fig. 7). "
            "explain.json holds the numbers. Needs matplotlib (pip install 'avs-models[plot]')."
        ),
    )
    parser.add_argument(
        "model_dir", metavar="MODEL_DIR", help="a folder written by save_pretrained (or training)"
    )
    parser.add_argument(
        "video",
        metavar="VIDEO",
        help="a video file with an audio track, or a folder of frames (with --audio)",
    )
    parser.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder (created if missing)")
    parser.add_argument("--audio", metavar="FILE", help="sound file (wav, flac, mp3, m4a, ...) going with a frames folder")
    parser.add_argument(
        "--clip",
        type=non_negative_int,
        default=0,
        help="which clip of the processor's num_frames seconds (default 0, the first)",
    )
    parser.add_argument(
        "--frame",
        type=non_negative_int,
        default=0,
        help="the clip's frame shown by single-frame figures (default 0)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from avs_models.explanation import explain
    from avs_models.training.trainer import library_progress_bars

    with library_progress_bars(False):
        paths = explain(
            args.model_dir, args.video, args.out, audio=args.audio, clip=args.clip, frame=args.frame
        )
    print(f"wrote {len(paths)} files to {args.out}:", *(path.name for path in paths.values()))
    return 0
