"""`avs-models demo`: train and evaluate a small PCMANet on synthetic data, offline, in minutes."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="synthetic data -> small PCMANet trained with the real loop -> metrics and overlays",
        description=(
            "Offline, in minutes on a CPU: writes a synthetic MS3 (or S4) data set, trains a small PCMANet on it "
            "with the real training loop, scores the held-out clips with their own audio and with swapped audio, "
            "and draws the overlays of a held-out clip both ways."
        ),
    )
    parser.add_argument(
        "--output", default="avs-demo", help="folder for the data, the model and the overlays"
    )
    parser.add_argument(
        "--subset", choices=("s4", "ms3"), default="ms3", help="synthetic subset (default ms3)"
    )
    parser.add_argument(
        "--num-videos", type=int, default=60, help="synthetic clips to make, at least 10 (default 60)"
    )
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    parser.add_argument("--image-size", type=int, default=64, help="frame side in pixels (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the training (default 0)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import logging

    from avs_models.demo import run_demo

    logging.basicConfig(level=logging.WARNING)
    run_demo(
        args.output,
        subset=args.subset,
        num_videos=args.num_videos,
        num_epochs=args.epochs,
        image_size=args.image_size,
        seed=args.seed,
    )
    return 0
