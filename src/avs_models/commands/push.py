"""`avs-models push MODEL_DIR REPO_ID`: upload a saved model folder, with its model card, to the Hub."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "push",
        help="upload a model folder (safetensors weights, config, processor, code, model card) to the Hub",
        description=(
            "Writes the model card (README.md) of MODEL_DIR for REPO_ID and uploads the folder with "
            "huggingface_hub's upload_folder: the weights as safetensors (pickled weight files are left out), "
            "the config, the processor, the model's code (it loads with trust_remote_code=True without "
            "avs-models) and the card. Creates the repository if needed. Log in first with `hf auth login` "
            "(or set HF_TOKEN). --dry-run prints the files and the card instead, and sends nothing."
        ),
    )
    parser.add_argument(
        "model_dir", metavar="MODEL_DIR", help="a folder written by save_pretrained or training"
    )
    parser.add_argument("repo_id", metavar="REPO_ID", help="the Hub repository, e.g. your-name/pcmanet-s4")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", help="branch to upload to (created from the default branch if missing)")
    parser.add_argument(
        "--commit-message", help="commit message (default: 'Upload MODEL_DIR with avs-models')"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the files and the card that would be sent; send nothing"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from avs_models.hub import push_folder

    plan = push_folder(
        args.model_dir,
        args.repo_id,
        private=args.private or None,
        revision=args.revision,
        commit_message=args.commit_message,
        dry_run=args.dry_run,
    )
    where = f"{args.repo_id}" + (f" (branch {args.revision})" if args.revision else "")
    if args.dry_run:
        print(f"would upload {len(plan.files)} files from {plan.model_dir} to {where}:")
        for name in plan.files:
            print(f"  {name}")
        for name in plan.left_out:
            print(f"  left out: {name}")
        print(f"\n--- {plan.model_dir.name}/README.md as it would be sent ---\n{plan.card}", end="")
    else:
        print(
            f"uploaded {len(plan.files)} files from {plan.model_dir} to https://huggingface.co/{args.repo_id}"
        )
    return 0
