"""The options that choose how a model runs (`avs_models.optimize_for_inference`), shared by the
sub-commands that run models: `--precision`, `--compile`, `--compile-mode`, `--calibration`."""

from __future__ import annotations

import argparse

from avs_models.inference_optimization import INT8_EXTRA_HINT, PRECISIONS, torchao_available


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("speed (see docs/faster-inference.md)")
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (default); bf16 (autocast; fastest on CPUs with bfloat16 support and on GPUs); fp16 "
        "(GPU only); int8 (static quantization for x86 CPUs: needs pip install 'avs-models[int8]')",
    )
    group.add_argument(
        "--compile",
        action="store_true",
        help="run the model through torch.compile with frozen weights (the first batch of each size "
        "compiles: minutes on a CPU); with int8, what makes it fast",
    )
    group.add_argument("--compile-mode", metavar="MODE", help="torch.compile mode, e.g. max-autotune")
    group.add_argument(
        "--calibration",
        nargs="+",
        metavar="VIDEO",
        help="int8: videos to calibrate on (default: the int8 program saved in MODEL_DIR, else synthetic clips)",
    )


def inference_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of `optimize_for_inference` the options give, after checking that they go together."""
    if args.calibration and args.precision != "int8":
        raise ValueError(
            f"--calibration calibrates int8 models: it goes with --precision int8, not {args.precision}"
        )
    if args.compile_mode and not args.compile:
        raise ValueError("--compile-mode goes with --compile")
    if args.precision == "int8" and not torchao_available():
        raise ValueError(f"--precision int8 needs torchao, which is not installed: {INT8_EXTRA_HINT}")
    return {
        "precision": args.precision,
        "compile": args.compile,
        "compile_mode": args.compile_mode,
        "calibration": args.calibration,
    }


__all__ = ["add_inference_options", "inference_options"]
