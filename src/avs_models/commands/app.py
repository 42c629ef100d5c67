"""`avs-models app [MODEL_DIR ...]`: the web demo (a Gradio page) on this machine."""

from __future__ import annotations

import argparse

from avs_models.commands.arguments import port
from avs_models.commands.inference_options import add_inference_options, inference_options


def add_parser(subparsers) -> None:
    from avs_models.app import DEFAULT_HOST, DEFAULT_PORT

    parser = subparsers.add_parser(
        "app",
        help="the web demo: upload or record a video, see the masks and the overlay with its sound",
        description=(
            "Serves a Gradio page where you upload or record a video (or pick an example clip), choose a model "
            "and get the overlay video with the video's own sound, the overlay of every second, C3N's consensus "
            "per second and the AVSS class legend; threshold and opacity sliders redraw without running the model "
            "again. Models: the MODEL_DIR folders given (the first is the default); with none, the small "
            "demo-trained PCMANet, trained once on first use (a few minutes) and cached in $AVS_MODELS_CACHE "
            "(default ~/.cache/avs-models). Listens on 127.0.0.1 (this machine only) unless --host or --share "
            "says otherwise."
        ),
    )
    parser.add_argument(
        "model_dirs", nargs="*", metavar="MODEL_DIR", help="saved model folders for the model menu"
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 serves other machines too)",
    )
    parser.add_argument("--port", type=port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--share", action="store_true", help="also ask Gradio for a public link (needs the internet)"
    )
    add_inference_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from avs_models.app import cache_dir, demo_model_dir, launch
    from avs_models.commands.predict import check_model_dir

    for model_dir in args.model_dirs:
        check_model_dir(Path(model_dir))
    inference = inference_options(args)  # options that do not go together fail before the server starts
    if not args.model_dirs:
        state = "cached" if demo_model_dir().is_dir() else "trained on first use (a few minutes), then cached"
        print(f"default model: the demo-trained PCMANet in {demo_model_dir()} ({state})")
    print(f"example clips in {cache_dir() / 'examples'}")
    launch(args.model_dirs, host=args.host, port=args.port, share=args.share, **inference)
    return 0
