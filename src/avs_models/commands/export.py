"""`avs-models export MODEL_DIR --format {torch-export,onnx} --out PATH`: a deployable program, checked against eager.

Writes a `torch.export` program (`.pt2`, load with `torch.export.load(path).module()`) or an ONNX
file (the dynamo-based exporter, run with `onnxruntime`), runs it on a sample input of the model's
own kind (frames and audio for a segmentation model, audio for an audio encoder) and prints the
largest difference from the eager model. A model that cannot be exported gets one line saying why.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import torch

from .arguments import positive_int

FORMATS = ("torch-export", "onnx")
SUFFIXES = {"torch-export": ".pt2", "onnx": ".onnx"}
# Exporter messages can run to pages: the one-line error keeps their start.
MAX_REASON_LENGTH = 600


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a saved model with torch.export (.pt2) or to ONNX, checked against eager",
        description=(
            "Exports a saved model for deployment: a torch.export program (.pt2) or an ONNX file (dynamo "
            "exporter). The export is run on a sample input and compared with the eager model; the largest "
            "difference is printed."
        ),
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a save_pretrained folder of the package")
    parser.add_argument("--format", choices=FORMATS, default="torch-export", help="default torch-export")
    parser.add_argument("--out", required=True, type=Path, help="file to write (.pt2 or .onnx)")
    parser.add_argument(
        "--frames", type=positive_int, default=5, help="frames per clip of the sample input (default 5)"
    )
    parser.add_argument(
        "--image-size",
        type=positive_int,
        nargs="+",
        default=[224],
        metavar="SIZE",
        help="frame height and width of the sample input (one value: square; default 224)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=1, help="clips in the sample input")
    parser.add_argument(
        "--dynamic-batch",
        action="store_true",
        help="export with a dynamic batch dimension (checked at the sample's batch size and one more)",
    )
    parser.set_defaults(func=run)


def audio_example(audio_config, leading: tuple[int, ...], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One second of audio input per leading index, shaped for the encoder `audio_config` describes."""
    if audio_config.model_type == "vggish":
        shape = (1, audio_config.num_frames, audio_config.num_mel_bins)
        return {"input_features": torch.randn(*leading, *shape, generator=generator)}
    sampling_rate = getattr(audio_config, "sample_rate", None) or getattr(audio_config, "sampling_rate", None)
    if sampling_rate is not None:  # waveform encoders (PANNs, BEATs)
        return {"input_values": 0.1 * torch.randn(*leading, sampling_rate, generator=generator)}
    if hasattr(audio_config, "max_length") and hasattr(audio_config, "num_mel_bins"):  # spectrogram Transformers (AST)
        shape = (audio_config.max_length, audio_config.num_mel_bins)
        return {"input_values": torch.randn(*leading, *shape, generator=generator)}
    raise ValueError(f"cannot make a sample audio input for a {audio_config.model_type!r} audio encoder")


def example_inputs(model, batch_size: int, num_frames: int, height: int, width: int) -> dict[str, torch.Tensor]:
    """A random input of the model's kind: clips `(B, T, 3, H, W)` with their audio (raw audio for a
    model with an audio encoder, else embeddings and, where taken, AudioSet logits), or audio alone
    for an audio encoder (`B` one-second inputs)."""
    config = model.config
    generator = torch.Generator().manual_seed(0)
    parameters = inspect.signature(model.forward).parameters
    if "pixel_values" not in parameters:
        return audio_example(config, (batch_size,), generator)
    inputs = {"pixel_values": torch.randn(batch_size, num_frames, 3, height, width, generator=generator)}
    audio_config = getattr(config, "audio_config", None)
    if audio_config is not None:
        inputs.update(audio_example(audio_config, (batch_size, num_frames), generator))
        return inputs
    inputs["audio_embeds"] = torch.randn(batch_size, num_frames, config.audio_embed_dim, generator=generator)
    if "audio_logits" in parameters:
        inputs["audio_logits"] = torch.randn(batch_size, num_frames, config.num_audio_classes, generator=generator)
    return inputs


def first_output(output) -> torch.Tensor:
    """The first tensor of a model output (the logits, or an encoder's embeddings)."""
    return output.to_tuple()[0] if hasattr(output, "to_tuple") else output[0]


def _batch_dims(inputs: dict[str, torch.Tensor]) -> dict[str, dict[int, object]]:
    batch = torch.export.Dim("batch", min=1, max=1024)
    return {name: {0: batch} for name in inputs}


def _batch_size(inputs: dict[str, torch.Tensor]) -> int:
    return len(next(iter(inputs.values())))


def _larger_batch(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: torch.cat([tensor, tensor[:1]]) for name, tensor in inputs.items()}


def _run_onnx(path: Path, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {node.name: inputs[node.name].numpy() for node in session.get_inputs()}
    return torch.from_numpy(session.run(None, feeds)[0])


def check_out_path(out: Path, export_format: str) -> None:
    """A known format, and the file name it needs (`torch.export.load` reads `.pt2` files only)."""
    if export_format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {export_format!r}")
    if out.suffix != SUFFIXES[export_format]:
        raise ValueError(f"--out of a {export_format} export must end in {SUFFIXES[export_format]}, got {out}")


def export_model(
    model, inputs: dict[str, torch.Tensor], out: Path, export_format: str, dynamic_batch: bool = False
) -> list[float]:
    """Export `model` (eval mode) traced on `inputs` to `out`; return the largest difference between the
    exported program's first output and eager's, at the sample's batch size (and one more with
    `dynamic_batch`).

    Raises:
        ValueError: the exporter cannot capture the model (the message says why).
    """
    check_out_path(out, export_format)
    model = model.eval()
    checks = [inputs, _larger_batch(inputs)] if dynamic_batch else [inputs]
    # torch.export specialises dimensions of size 1, so a dynamic batch is traced on two clips or more.
    traced = checks[-1] if dynamic_batch and _batch_size(inputs) == 1 else inputs
    dynamic_shapes = _batch_dims(traced) if dynamic_batch else None
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad():
            if export_format == "torch-export":
                program = torch.export.export(model, args=(), kwargs=traced, dynamic_shapes=dynamic_shapes)
                torch.export.save(program, out)
            else:
                torch.onnx.export(
                    model, args=(), kwargs=traced, f=out, dynamo=True, dynamic_shapes=dynamic_shapes, verbose=False
                )
    except Exception as error:  # the exporters raise many kinds; each is the reason for the user
        reason = " ".join(str(error).split()) or type(error).__name__
        if len(reason) > MAX_REASON_LENGTH:
            reason = reason[:MAX_REASON_LENGTH] + " [...] (run with --debug for the whole message)"
        raise ValueError(f"cannot export {type(model).__name__} to {export_format}: {reason}") from error

    differences = []
    exported = torch.export.load(out).module() if export_format == "torch-export" else None
    for sample in checks:
        with torch.no_grad():
            expected = first_output(model(**sample))
            actual = first_output(exported(**sample)) if exported is not None else _run_onnx(out, sample)
        if actual.shape != expected.shape:
            raise ValueError(
                f"the exported {type(model).__name__} gives shape {tuple(actual.shape)} where eager gives "
                f"{tuple(expected.shape)}"
            )
        differences.append((actual.float() - expected.float()).abs().max().item())
    return differences


def run(args: argparse.Namespace) -> int:
    from transformers import AutoModel

    import avs_models  # noqa: F401  (registers the package's models with AutoModel)

    if len(args.image_size) > 2:
        raise ValueError(f"--image-size takes one or two values (height width), got {len(args.image_size)}")
    check_out_path(args.out, args.format)
    height, width = (args.image_size * 2)[:2]
    model = AutoModel.from_pretrained(args.model_dir)
    inputs = example_inputs(model, args.batch_size, args.frames, height, width)
    differences = export_model(model, inputs, args.out, args.format, args.dynamic_batch)
    size_mb = args.out.stat().st_size / 2**20
    checked = " and ".join(
        f"batch {_batch_size(inputs) + index}: {difference:.2e}" for index, difference in enumerate(differences)
    )
    print(f"exported {type(model).__name__} to {args.out} ({args.format}, {size_mb:.1f} MB)")
    print(f"max |exported - eager| of the first output on a sample input ({checked})")
    return 0
