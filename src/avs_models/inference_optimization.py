"""Faster inference: a loaded segmentation model in bfloat16, float16 (GPU) or int8, optionally compiled.

`optimize_for_inference(model, precision=..., compile=...)` returns an `InferenceModel`, a module
called like the model (`fast(**inputs).logits`) that runs it without gradients in the chosen way:

- `"fp32"`: the model as it is (with `compile=True`: `torch.compile` with freezing, which folds
  the weights into the compiled code; the masks stay those of the eager model).
- `"bf16"` / `"fp16"`: under `torch.autocast`, so matrix products and convolutions run in the
  lower precision while the weights, the norms and whatever the model keeps in float32 (its
  eps-sensitive norms and thresholds, C3N's consensus) stay in float32. float16 is for GPUs only.
- `"int8"`: static post-training quantization through PyTorch 2 export (`torch.export` ->
  `torchao`'s `prepare_pt2e` with the `X86InductorQuantizer` -> calibration -> `convert_pt2e`):
  int8 convolutions and linear layers with per-channel weights, for x86 CPUs. It needs
  `pip install "avs-models[int8]"`. Calibration runs a few clips through the model to fix the
  activation ranges: clips you pass (video paths or processor outputs), or synthetic clips made
  with the model's processor. The quantized program is saved with `InferenceModel.save_pretrained`
  and found again in the model's folder, so later runs skip the calibration. Without
  `compile=True` the program runs PyTorch's reference (float) kernels around quantize/dequantize
  steps: the accuracy of int8, not its speed.

The pipeline (`pipeline("audio-visual-segmentation", model=..., precision=..., compile=...)`),
`avs-models predict` and `avs-models evaluate` take the same options. See docs/faster-inference.md.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import platform
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import PreTrainedModel

from avs_models.models.inputs import model_inputs

if TYPE_CHECKING:  # the processing package imports this module (the pipeline)
    from avs_models.processing import AudioVisualProcessor

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Written next to the model's config and weights by `InferenceModel.save_pretrained`.
INT8_PROGRAM_NAME = "int8_program.pt2"
INT8_RECORD_NAME = "int8_program.json"
DEFAULT_CALIBRATION_CLIPS = 8
INT8_EXTRA_HINT = "pip install 'avs-models[int8]'"
_NO_TORCHAO = f"precision='int8' needs torchao, which is not installed: {INT8_EXTRA_HINT}"
_X86_MACHINES = ("x86_64", "amd64", "i386", "i686", "x86")


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def _model_device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _check_device(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision='fp16' runs on a GPU only (float16 matrix products are slow or missing on a CPU); "
            f"the model is on {device.type}: use precision='bf16' on a CPU"
        )
    if precision == "int8" and device.type != "cpu":
        raise ValueError(
            f"precision='int8' quantizes for x86 CPUs (torchao's X86InductorQuantizer); the model is on "
            f"{device.type}: use precision='bf16' or 'fp16' on a GPU"
        )
    if precision == "int8" and platform.machine().lower() not in _X86_MACHINES:
        raise ValueError(
            f"precision='int8' quantizes for x86 CPUs (torchao's X86InductorQuantizer); this CPU is "
            f"{platform.machine()}: use precision='bf16'"
        )


def torchao_available() -> bool:
    return importlib.util.find_spec("torchao") is not None


def synthetic_calibration_inputs(
    processor, num_clips: int = DEFAULT_CALIBRATION_CLIPS, seed: int = 0
) -> dict:
    """`num_clips` synthetic clips prepared by `processor`: objects over a textured background, each
    kind with its own sound, some of them sounding (`avs_models.data.synthetic`). Frames are drawn at
    the processor's size, so every clip has the shapes of the model's inputs at inference."""
    from avs_models.data.synthetic import (
        SAMPLING_RATE,
        render_audio,
        render_frame,
        sample_scene,
        sample_sounding,
    )

    size = max(processor.image_processor.size.values())
    clips = []
    for index in range(num_clips):
        rng = np.random.default_rng([seed, index])
        num_objects = int(rng.integers(2, 5))
        scene = sample_scene(rng, processor.num_frames, num_objects, max(size, 32))
        sounding = sample_sounding(rng, "multi" if index % 2 else "single", processor.num_frames, num_objects)
        clips.append(
            processor(
                frames=[render_frame(scene, t)[0] for t in range(processor.num_frames)],
                audio=render_audio(scene, sounding, rng),
                sampling_rate=SAMPLING_RATE,
            )
        )
    return {key: torch.cat([clip[key] for clip in clips]) for key in clips[0]}


def calibration_batches(
    calibration: Iterable | None, processor, num_clips: int = DEFAULT_CALIBRATION_CLIPS
) -> list[dict]:
    """Calibration inputs as a list of batches of clips: each entry of `calibration` is a video path
    (prepared by `processor`) or a dict of model inputs (a processor output); `None` gives
    `num_clips` synthetic clips made by `processor`."""
    if calibration is None:
        if processor is None:
            raise ValueError(
                "int8 calibration needs clips: pass `calibration` (video paths or processor outputs) or "
                "the model's `processor`, which makes synthetic clips"
            )
        return [synthetic_calibration_inputs(processor, num_clips)]
    if isinstance(calibration, (str, Path, Mapping)):
        calibration = [calibration]
    batches = []
    for index, entry in enumerate(calibration):
        if isinstance(entry, (str, Path)):
            if processor is None:
                raise ValueError(f"calibration video {entry} needs a `processor` to prepare it")
            if not Path(entry).is_file():
                raise FileNotFoundError(f"calibration video not found: {entry}")
            entry = processor(str(entry))
        elif not isinstance(entry, Mapping):
            raise TypeError(
                f"calibration entry {index} is a {type(entry).__name__}: pass video paths or dicts of model "
                "inputs (processor outputs)"
            )
        batches.append(dict(entry))
    if not batches:
        raise ValueError("`calibration` is empty: pass at least one clip, or None for synthetic clips")
    return batches


def _weights_checksum(model: torch.nn.Module) -> str:
    """The trainer's checksum of the weights: a saved int8 program serves the weights it came from only."""
    # Imported here: the trainer imports the pipeline, which imports this module.
    from avs_models.training.trainer import weights_checksum

    return weights_checksum(model)


def _quantizer():
    if not torchao_available():
        raise ModuleNotFoundError(_NO_TORCHAO)
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config())
    return quantizer


def _example_batch(batches: list[dict], names: list[str]) -> dict[str, torch.Tensor]:
    """Two clips to export with (the only clip twice if there is one): with a batch of 1,
    torch.export would fix the batch size at 1."""
    example = {}
    for name in names:
        clips = torch.cat([batch[name] for batch in batches])[:2]
        example[name] = clips if len(clips) == 2 else torch.cat([clips, clips])
    return example


def _dynamic_batch(example: dict[str, torch.Tensor]) -> dict:
    batch = torch.export.Dim("batch")
    return {name: {0: batch} for name in example}


def _export(module: torch.nn.Module, example: dict[str, torch.Tensor]):
    try:
        return torch.export.export(module, args=(), kwargs=example, dynamic_shapes=_dynamic_batch(example))
    except Exception as error:
        name = type(getattr(module, "_orig_mod", module)).__name__
        raise RuntimeError(
            f"precision='int8' quantizes a torch.export graph of the model, and torch.export cannot capture "
            f"{name}: {str(error).strip().splitlines()[0]}"
        ) from error


def quantize_int8(
    model: PreTrainedModel, batches: list[dict], names: list[str] | None = None
) -> tuple[torch.nn.Module, dict]:
    """Static int8 quantization of `model` (PT2E, x86 inductor quantizer), calibrated on `batches`.

    Returns the converted module (called like the model, any batch size; the other input shapes
    are those of the calibration clips) and the record saved with it."""
    quantizer = _quantizer()  # first: without torchao, the error says how to install it
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    names = names or list(model_inputs(batches[0]))
    shapes = {name: list(batches[0][name].shape[1:]) for name in names}
    for batch in batches:
        _check_inputs(batch, names, shapes, "calibration clips")
    example = _example_batch(batches, names)
    model = model.eval()
    with torch.no_grad():
        program = _export(model, example)
    with warnings.catch_warnings():
        # The quantizer notes every op it leaves in float (e.g. a max-pool after a float op).
        warnings.filterwarnings("ignore", message=r"The input of \w+ is not quantized")
        prepared = prepare_pt2e(program.module(), quantizer)
    with torch.no_grad():
        for batch in batches:
            prepared(**{name: batch[name] for name in names})
    converted = convert_pt2e(prepared)
    clips = sum(len(batch[names[0]]) for batch in batches)
    record = {
        "precision": "int8",
        "method": "PT2E static quantization, torchao X86InductorQuantizer (default configuration)",
        "model_class": type(model).__name__,
        "weights_sha256": _weights_checksum(model),
        "inputs": {
            name: {"shape": ["batch", *shapes[name]], "dtype": str(example[name].dtype)} for name in names
        },
        "calibration_clips": clips,
        "torch": torch.__version__,
        "torchao": _torchao_version(),
    }
    return converted, record


def _torchao_version() -> str:
    from importlib.metadata import version

    return version("torchao")


def _check_inputs(inputs: Mapping, names: list[str], shapes: dict, what: str) -> None:
    missing = [name for name in names if name not in inputs]
    if missing:
        raise ValueError(f"{what} lack {', '.join(missing)} (the int8 program takes {', '.join(names)})")
    for name in names:
        shape = list(inputs[name].shape[1:])
        if shape != list(shapes[name]):
            raise ValueError(
                f"{what}: `{name}` has shape [B, {', '.join(map(str, shape))}], but the int8 program was "
                f"calibrated and exported for [B, {', '.join(map(str, shapes[name]))}]; calibrate again with "
                "clips of the new shape (`calibration=`)"
            )


class InferenceModel(torch.nn.Module):
    """A segmentation model prepared for inference by `optimize_for_inference`.

    Called like the model, with the same keyword inputs, it returns the model's output; it always
    runs without gradients. `config` is the model's. `precision` and `compiled` say how it runs;
    `int8_record` describes an int8 program (calibration, input shapes, versions).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        precision: str,
        runner: torch.nn.Module,
        compiled: bool,
        freezing: bool = True,
        int8_record: dict | None = None,
    ):
        super().__init__()
        self.model = model
        self.precision = precision
        self.runner = runner
        self.compiled = compiled
        self.freezing = freezing
        self.int8_record = int8_record

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return _model_device(self.model)

    def _autocast(self):
        dtype = AUTOCAST_DTYPES.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def _compiler_settings(self):
        # torch.compile compiles at the first call (and at a call with new shapes), so Inductor's
        # settings apply around every call. Freezing is set here, not through torch.compile's
        # `options`, which the int8 weight prepacking does not see.
        return (
            torch._inductor.config.patch(freezing=self.freezing)
            if self.compiled
            else contextlib.nullcontext()
        )

    def train(self, mode: bool = True) -> InferenceModel:
        """Inference only: `eval()` (called by evaluation loops) leaves everything as it is, since the
        model is in eval mode already and an exported int8 program has no train mode to switch to."""
        if mode:
            raise ValueError("an InferenceModel runs inference only: train the model it was made from")
        return self

    def forward(self, **inputs):
        if self.int8_record is not None:
            inputs = self._int8_inputs(inputs)
        with torch.no_grad(), self._autocast(), self._compiler_settings():
            return self.runner(**inputs)

    def _int8_inputs(self, inputs: dict) -> dict:
        expected = self.int8_record["inputs"]
        names = list(expected)
        if "frame_mask" in expected and inputs.get("frame_mask") is None and "pixel_values" in inputs:
            # No mask means every frame is real.
            inputs = {**inputs, "frame_mask": torch.ones(inputs["pixel_values"].shape[:2], dtype=torch.long)}
        unexpected = sorted(
            name for name, value in inputs.items() if value is not None and name not in expected
        )
        if unexpected:
            raise ValueError(
                f"the int8 program takes {', '.join(names)}; got also {', '.join(unexpected)} (quantize with "
                "calibration clips that carry these inputs)"
            )
        _check_inputs(inputs, names, {name: spec["shape"][1:] for name, spec in expected.items()}, "inputs")
        return {name: inputs[name].to(self.device) for name in names}

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        """Save the model (`save_pretrained` of the model) and, for int8, the quantized program
        (`int8_program.pt2`, a `torch.export` program) and its record (`int8_program.json`), which
        `optimize_for_inference` and the pipeline load from that folder without calibrating."""
        save_directory = Path(save_directory)
        self.model.save_pretrained(save_directory, **kwargs)
        if self.int8_record is None:
            return
        program_module = getattr(self.runner, "_orig_mod", self.runner)
        example = {
            name: torch.zeros([2, *spec["shape"][1:]], dtype=getattr(torch, spec["dtype"].split(".")[-1]))
            for name, spec in self.int8_record["inputs"].items()
        }
        with torch.no_grad():
            program = _export(program_module, example)
        torch.export.save(program, save_directory / INT8_PROGRAM_NAME)
        (save_directory / INT8_RECORD_NAME).write_text(json.dumps(self.int8_record, indent=1) + "\n")

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        precision: str = "fp32",
        compile: bool = False,
        **kwargs,
    ) -> InferenceModel:
        """Load a saved model and prepare it: `optimize_for_inference(AutoModelForAudioVisualSegmentation
        .from_pretrained(path), precision, compile, ...)`. Keyword arguments of `optimize_for_inference`
        (`calibration`, `processor`, `compile_mode`, `freezing`) go to it, the others to `from_pretrained`."""
        from avs_models.models.auto import AutoModelForAudioVisualSegmentation

        option_names = ("calibration", "processor", "num_calibration_clips", "compile_mode", "freezing")
        options = {name: kwargs.pop(name) for name in option_names if name in kwargs}
        model = AutoModelForAudioVisualSegmentation.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return optimize_for_inference(model, precision, compile, **options)


def _saved_int8_program(model: PreTrainedModel) -> tuple[torch.nn.Module, dict] | None:
    """The int8 program saved in the model's folder, if there is one for these weights."""
    name_or_path = getattr(model, "name_or_path", "")
    if not name_or_path:  # built in memory, not loaded from a folder
        return None
    folder = Path(name_or_path)
    program_path, record_path = folder / INT8_PROGRAM_NAME, folder / INT8_RECORD_NAME
    if not (program_path.is_file() and record_path.is_file()):
        return None
    record = json.loads(record_path.read_text())
    if record.get("weights_sha256") != _weights_checksum(model):
        raise ValueError(
            f"{program_path} was quantized from other weights than the model loaded from {folder}: "
            "pass `calibration=` to quantize these weights (and save again), or delete the two "
            "int8_program files"
        )
    _quantizer()  # torchao registers the quantized ops the program calls
    program = torch.export.load(program_path).module()
    logger.info(
        "int8 program loaded from %s (%d calibration clips)", program_path, record["calibration_clips"]
    )
    return program, record


def optimize_for_inference(
    model: PreTrainedModel,
    precision: str = "fp32",
    compile: bool = False,
    *,
    calibration: Iterable | None = None,
    processor: AudioVisualProcessor | None = None,
    num_calibration_clips: int = DEFAULT_CALIBRATION_CLIPS,
    compile_mode: str | None = None,
    freezing: bool = True,
) -> InferenceModel:
    """Prepare a loaded segmentation model for fast inference.

    Args:
        model: a segmentation model (PCMANet, C3N, TPAVI, AVSegFormer), on the device to run on.
        precision: `"fp32"`, `"bf16"` (autocast), `"fp16"` (autocast, GPU only) or `"int8"`
            (static quantization, x86 CPU).
        compile: run through `torch.compile` (the first call, and the first call with another batch
            size, compile: minutes on a CPU).
        calibration: int8 only: video paths or dicts of model inputs (processor outputs) to calibrate
            on. By default, the int8 program saved in the model's folder (`InferenceModel.save_pretrained`)
            if there is one, otherwise `num_calibration_clips` synthetic clips made by `processor`.
        processor: the `AudioVisualProcessor` the model's inputs come from (int8: it prepares the
            calibration clips, and sets the clip shape the program is exported for).
        num_calibration_clips: synthetic calibration clips (int8, no `calibration` given).
        compile_mode: `torch.compile`'s `mode` (e.g. `"max-autotune"`).
        freezing: with `compile`, fold the weights into the compiled code (inference only; int8's
            lowering to int8 kernels needs it).

    Returns:
        An `InferenceModel`, called like the model.
    """
    _check_precision(precision)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a loaded model (torch.nn.Module), got {type(model).__name__}")
    if isinstance(model, InferenceModel):
        raise TypeError("`model` is already an InferenceModel: pass the model it was made from")
    _check_device(precision, _model_device(model))
    if precision == "int8" and not torchao_available():  # before any calibration clip is made
        raise ModuleNotFoundError(_NO_TORCHAO)
    model.eval()
    runner, record = model, None
    if precision == "int8":
        saved = _saved_int8_program(model) if calibration is None else None
        if saved is None:
            runner, record = quantize_int8(
                model, calibration_batches(calibration, processor, num_calibration_clips)
            )
        else:
            runner, record = saved
        if processor is not None:
            # The program's input shapes are fixed (but the batch size): they must be the processor's.
            clip = synthetic_calibration_inputs(processor, 1)
            shapes = {name: spec["shape"][1:] for name, spec in record["inputs"].items()}
            _check_inputs(clip, list(shapes), shapes, "the processor's clips")
    if compile:
        # Static shapes: a new batch size compiles anew (dynamic shapes break the int8 weight prepacking).
        runner = torch.compile(runner, mode=compile_mode, dynamic=False)
    return InferenceModel(model, precision, runner, compiled=compile, freezing=freezing, int8_record=record)


__all__ = [
    "INT8_EXTRA_HINT",
    "INT8_PROGRAM_NAME",
    "INT8_RECORD_NAME",
    "PRECISIONS",
    "InferenceModel",
    "calibration_batches",
    "optimize_for_inference",
    "quantize_int8",
    "synthetic_calibration_inputs",
    "torchao_available",
]
