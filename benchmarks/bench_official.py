"""Time the official PCMANet or C3N forward next to ours, on the same machine and the same clip.

The official code is not part of this project and is never copied into it: the script imports
it at run time from a checkout you make yourself and point to with `--official-repo`:

    git clone https://github.com/PrettyPlate/PCMANet      # PCMANet (ResNet-50, PVT-v2-b5)
    git clone https://github.com/ZhaofengSHI/AVS-C3N      # C3N (PVT-v2-b5, Swin-B)
    pip install einops                                    # imported by the official PCMANet code
    pip install h5py                                      # read by the official C3N code

    python benchmarks/bench_official.py --official-repo PCMANet --runs 10 --json official.json
    python benchmarks/bench_official.py --official-repo AVS-C3N --model c3n-swin-b --runs 5

Without `--model`, every model the checkout provides is measured. Each model runs in its own
process: the official module is built, run once and its peak memory read (max RSS on CPU, the
CUDA allocator's peak on GPU); then our model is built with the configuration of
`bench_inference.py` / `bench_c3n.py` and given the official module's weights through the
project's conversion code. After a warm-up, each of the `--runs` rounds times the official
forward and then ours on the same tensors, and the medians are reported: alternating keeps a slow
spell of a shared machine from landing on one side only. Same
weights mean both compute the same masks (the report gives the largest logit difference), and
PCMANet's QSCA keeps the same share of tokens in both. The clip is the one of our benchmarks:
one clip of 5 frames, 224x224, fp32, eval mode, VGGish embeddings (and AudioSet logits for C3N).
PCMANet runs under `torch.no_grad()`. The official C3N forward runs a backward pass for its
Grad-CAM weights, so it runs with gradients enabled, as the official test script does; ours
computes the same weights under `torch.no_grad()`.

To import the official files without their training environment, the child process puts small
stand-ins in `sys.modules` while (and only while) it imports them:

- `timm.models.layers`, `timm.models.registry`, `timm.models.vision_transformer`: timm needs
  torchvision, which breaks imports with CPU-only torch wheels; the backbones only need
  DropPath (stochastic depth, the identity in eval mode), `to_2tuple`, `trunc_normal_`, a no-op
  `register_model` and `_cfg`.
- `torchvision.models`: the ResNet file imports it only to load ImageNet weights.
- `matplotlib.pyplot`: imported by the C3N model files, never called.
- `cv2`, only when OpenCV is not installed: C3N's Grad-CAM resizes each CAM image to 224x224
  (a picture the forward then discards); the stand-in does the same bilinear resize with torch.

and patches, only while the official module is built and timed: its ImageNet-weight loader
(`initialize_weights`, `initialize_pvt_weights` or `initialize_swin_weights`, which the
constructor calls in training mode, the default, to read paths of the official config) does
nothing, so the module keeps its random initialisation; on CPU, `torch.Tensor.cuda` returns the
tensor itself, since the official C3N calls `.cuda()` on its similarity matrix and Grad-CAM
weights. C3N reads a random 1000 x 527 similarity matrix (the same one ours gets) from a
temporary `.h5` given as `cfg.TRAIN.AV_SIM_MATRIX`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from bench_c3n import VARIANTS as C3N_VARIANTS  # benchmarks/ is on sys.path when run as a script
from bench_data import process_memory_mib, reset_peak_memory
from bench_inference import (
    FRAMES,
    SIZE,
    interleaved_median_seconds,
    peak_memory_mib,
    processor_name,
    run_child,
    write_report,
)
from bench_inference import VARIANTS as PCMANET_VARIANTS

from avs_models import C3NForAudioVisualSegmentation, PCMANetForAudioVisualSegmentation
from avs_models.models.c3n.convert_c3n_original_to_hf import convert_c3n_state_dict
from avs_models.models.pcmanet.convert_pcmanet_original_to_hf import convert_state_dict


@dataclass(frozen=True)
class OfficialRepo:
    url: str
    model_dir: str  # the folder the official scripts run from (`model` is a package in it)
    shared_files: tuple[str, ...]
    needs: tuple[str, ...]  # third-party packages the official model files import


@dataclass(frozen=True)
class OfficialModel:
    repo: str
    module: str
    backbone_file: str
    class_name: str
    weight_loader: str  # method that loads ImageNet weights when the constructor runs in training mode


REPOS = {
    "PCMANet": OfficialRepo(
        url="https://github.com/PrettyPlate/PCMANet",
        model_dir="avs_scripts/avs_s4",
        shared_files=("model/__init__.py", "model/ca.py"),
        needs=("einops",),
    ),
    "AVS-C3N": OfficialRepo(
        url="https://github.com/ZhaofengSHI/AVS-C3N",
        model_dir="C3N_vggish/avs_scripts/avs_s4",
        shared_files=("model/__init__.py", "model/TPAVI.py", "model/grad_cam_utils.py", "model/utils.py"),
        needs=("h5py",),
    ),
}
OFFICIAL_MODELS = {
    "pcmanet-resnet50": OfficialModel(
        "PCMANet", "model.ResNet_AVSModel", "model/resnet.py", "PCMANet", "initialize_weights"
    ),
    "pcmanet-pvt-v2-b5": OfficialModel(
        "PCMANet", "model.PVT_AVSModel", "model/pvt.py", "PCMANet", "initialize_weights"
    ),
    "c3n-pvt-v2-b5": OfficialModel(
        "AVS-C3N", "model.PVT_AVSModel", "model/pvt.py", "Pred_endecoder", "initialize_pvt_weights"
    ),
    "c3n-swin-b": OfficialModel(
        "AVS-C3N", "model.Swin_AVSModel", "model/swin.py", "Pred_endecoder", "initialize_swin_weights"
    ),
}
VISUAL_CLASSES, AUDIO_CLASSES = 1000, 527


def required_files(variant: str) -> list[str]:
    official = OFFICIAL_MODELS[variant]
    repo = REPOS[official.repo]
    module_file = official.module.replace(".", "/") + ".py"
    return [f"{repo.model_dir}/{name}" for name in (*repo.shared_files, module_file, official.backbone_file)]


def missing_files(checkout: Path, variant: str) -> list[str]:
    return [name for name in required_files(variant) if not (checkout / name).is_file()]


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


class _DropPath(torch.nn.Module):
    """Stochastic depth as timm defines it: in training, each sample's residual branch is dropped
    with probability `drop_prob` and the kept ones scaled by `1 / (1 - drop_prob)`; the identity in
    eval mode."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return hidden_states
        keep = 1.0 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        mask = hidden_states.new_empty(shape).bernoulli_(keep)
        return hidden_states * mask / keep


def _to_2tuple(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _resize_like_opencv(image, size):
    """`cv2.resize(image, (width, height))` with OpenCV's default (half-pixel bilinear) sampling."""
    width, height = size
    pixels = torch.from_numpy(image)[None, None]
    return F.interpolate(pixels, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()


def import_stand_ins() -> dict[str, types.ModuleType]:
    """The modules the official model files import but cannot (or need not) have here."""
    layers = _module(
        "timm.models.layers",
        DropPath=_DropPath,
        to_2tuple=_to_2tuple,
        trunc_normal_=torch.nn.init.trunc_normal_,  # same signature and distribution as timm's
    )
    registry = _module("timm.models.registry", register_model=lambda function: function)
    vision_transformer = _module("timm.models.vision_transformer", _cfg=lambda **kwargs: dict(kwargs))
    timm_models = _module(
        "timm.models", layers=layers, registry=registry, vision_transformer=vision_transformer
    )
    torchvision_models = _module("torchvision.models")
    pyplot = _module("matplotlib.pyplot")
    stand_ins = {
        "timm": _module("timm", models=timm_models),
        "timm.models": timm_models,
        "timm.models.layers": layers,
        "timm.models.registry": registry,
        "timm.models.vision_transformer": vision_transformer,
        "torchvision": _module("torchvision", models=torchvision_models),
        "torchvision.models": torchvision_models,
        "matplotlib": _module("matplotlib", pyplot=pyplot),
        "matplotlib.pyplot": pyplot,
    }
    if importlib.util.find_spec("cv2") is None:
        stand_ins["cv2"] = _module("cv2", resize=_resize_like_opencv)
    return stand_ins


@contextlib.contextmanager
def modules_in_place(modules: dict[str, types.ModuleType]):
    """Put `modules` in `sys.modules` for the duration of the block, then restore what was there."""
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module


def build_official(
    variant: str, checkout: Path, similarity: torch.Tensor, stand_ins: dict
) -> torch.nn.Module:
    official = OFFICIAL_MODELS[variant]
    sys.path.insert(0, str(checkout / REPOS[official.repo].model_dir))
    sys.dont_write_bytecode = True  # leave the user's checkout as it was
    with modules_in_place(stand_ins):
        try:
            module = importlib.import_module(official.module)
        except ModuleNotFoundError as error:
            raise SystemExit(
                f"The official {variant} code imports {error.name!r}, which is not installed here "
                f"(pip install {error.name})"
            ) from error
    model_class = getattr(module, official.class_name)
    with (
        tempfile.TemporaryDirectory() as folder,
        mock.patch.object(model_class, official.weight_loader, lambda self: None),
    ):
        config = None
        if official.repo == "AVS-C3N":
            import h5py

            path = Path(folder) / "similarity_matrix.h5"
            with h5py.File(path, "w") as handle:
                handle["similarity_matrix"] = similarity.numpy()
            config = types.SimpleNamespace(TRAIN=types.SimpleNamespace(AV_SIM_MATRIX=str(path)))
        torch.manual_seed(0)
        return model_class(channel=256, config=config).eval()


def build_ours(
    variant: str,
    official_state: dict[str, torch.Tensor],
    similarity: torch.Tensor,
    drop_path_rate: float = 0.0,
) -> torch.nn.Module:
    """Our model, configured as in our benchmarks (with the backbone's stochastic depth rate, which
    only acts in training), holding the official module's weights."""
    if variant in PCMANET_VARIANTS:
        config = PCMANET_VARIANTS[variant]()
        config.backbone_config.drop_path_rate = drop_path_rate
        model = PCMANetForAudioVisualSegmentation(config)
        converted, _ = convert_state_dict(official_state)
    else:
        config = C3N_VARIANTS[variant]()
        config.backbone_config.drop_path_rate = drop_path_rate
        model = C3NForAudioVisualSegmentation(config)
        _, converted = convert_c3n_state_dict(official_state)
        converted["label_similarity"] = similarity
    result = model.load_state_dict(converted, strict=False)
    # Transformers' Swin keeps a final classification norm that the backbone never applies.
    missing = [key for key in result.missing_keys if not key.startswith("backbone.swin.layernorm.")]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"official {variant} weights do not fit our model: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return model.eval()


def build_official_forward(
    variant: str, checkout: Path, inputs: list[torch.Tensor], similarity: torch.Tensor
) -> dict:
    """The official module, a function running its forward (the output kept in `outputs`), its
    parameter count, its (CPU) weights and the stand-ins its import needed."""
    device = inputs[0].device
    is_c3n = OFFICIAL_MODELS[variant].repo == "AVS-C3N"
    stand_ins = import_stand_ins()
    outputs = []

    def keep_on_cpu():
        # The official C3N moves tensors with `.cuda()` in its constructor and forward.
        if device.type != "cpu":
            return contextlib.nullcontext()
        return mock.patch.object(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)

    with keep_on_cpu():
        model = build_official(variant, checkout, similarity, stand_ins).to(device)

    def forward():
        with keep_on_cpu():
            if is_c3n:  # gradients on: its Grad-CAM runs a backward pass, as in the official test.py
                outputs[:] = [model(*inputs).detach()]
            else:
                with torch.no_grad():
                    outputs[:] = [model(*inputs)[0]]

    return {
        "forward": forward,
        "outputs": outputs,
        "params": sum(parameter.numel() for parameter in model.parameters()),
        "state_dict": {key: tensor.cpu() for key, tensor in model.state_dict().items()},
        "stand_ins": sorted(stand_ins),
    }


def measure(variant: str, checkout: Path, runs: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    similarity = torch.rand(VISUAL_CLASSES, AUDIO_CLASSES, generator=generator)
    inputs = {
        "pixel_values": torch.randn(1, FRAMES, 3, SIZE, SIZE, generator=generator).to(device),
        "audio_embeds": torch.randn(1, FRAMES, 128, generator=generator).to(device),
    }
    if OFFICIAL_MODELS[variant].repo == "AVS-C3N":
        inputs["audio_logits"] = torch.randn(1, FRAMES, AUDIO_CLASSES, generator=generator).to(device)
    # The official forward takes the frames of the clip as the batch: [B*T, ...].
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    official = build_official_forward(
        variant, checkout, [tensor.flatten(0, 1) for tensor in inputs.values()], similarity
    )
    official["forward"]()
    # Peak memory so far belongs to the official module alone (ours is built after).
    official_peak_memory = peak_memory_mib(device)
    ours = build_ours(variant, official.pop("state_dict"), similarity).to(device)
    outputs = []

    def our_forward():
        with torch.no_grad():
            outputs[:] = [ours(**inputs).logits.flatten(0, 1)]

    official_latency, our_latency = interleaved_median_seconds(
        [official["forward"], our_forward], runs, device
    )
    return {
        "model": variant,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else processor_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "clip": f"1 x {FRAMES} x 3 x {SIZE} x {SIZE}",
        "official_params_m": official["params"] / 1e6,
        "official_latency_s": official_latency,
        "official_peak_memory_mib": official_peak_memory,
        "our_params_m": sum(parameter.numel() for parameter in ours.parameters()) / 1e6,
        "our_latency_s": our_latency,
        "official_over_ours": official_latency / our_latency,
        "max_abs_logit_diff": (official["outputs"][0] - outputs[0]).abs().max().item(),
        "stand_ins": official["stand_ins"],
    }


# ----------------------------------------------------------------------------- training step
# Both official train.py files: Adam at 1e-4; stochastic depth of the official backbones.
LEARNING_RATE = 1e-4
OFFICIAL_DROP_PATH_RATE = {
    "pcmanet-resnet50": 0.0,
    "pcmanet-pvt-v2-b5": 0.1,
    "c3n-pvt-v2-b5": 0.1,
    "c3n-swin-b": 0.2,
}
TRAINING_PRECISIONS = {"fp32": None, "bf16 autocast": torch.bfloat16}


def training_batch(variant: str, clips: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A training batch of `clips` clips of 5 frames as the official S4 loaders give it: frames, VGGish
    embeddings (and AudioSet logits for C3N), and the ground truth of the first frame only."""
    generator = torch.Generator().manual_seed(1)
    batch = {
        "pixel_values": torch.randn(clips, FRAMES, 3, size, size, generator=generator),
        "audio_embeds": torch.randn(clips, FRAMES, 128, generator=generator),
        "labels": (torch.rand(clips, FRAMES, size, size, generator=generator) > 0.5).float(),
        "labeled_frames": torch.zeros(clips, FRAMES),
    }
    batch["labeled_frames"][:, 0] = 1
    if OFFICIAL_MODELS[variant].repo == "AVS-C3N":
        batch["audio_logits"] = torch.randn(clips, FRAMES, AUDIO_CLASSES, generator=generator)
    return {name: tensor.to(device) for name, tensor in batch.items()}


def official_training_step(
    variant: str, checkout: Path, batch: dict, similarity: torch.Tensor, dtype
) -> dict:
    """The official train.py step on `batch` (frames of the clips as the batch, as its loader gives
    them): forward in training mode, the official loss on the first frames, Adam. Returns the step
    (it returns the loss), the module's initial weights and the module."""
    official = OFFICIAL_MODELS[variant]
    stand_ins = import_stand_ins()
    device = batch["pixel_values"].device
    cpu = device.type == "cpu"
    keep_on_cpu = (
        (lambda: mock.patch.object(torch.Tensor, "cuda", lambda self, *args, **kwargs: self))
        if cpu
        else contextlib.nullcontext
    )
    with keep_on_cpu():
        model = build_official(variant, checkout, similarity, stand_ins).to(device)
    state = {key: tensor.detach().cpu().clone() for key, tensor in model.state_dict().items()}
    model.train()
    with modules_in_place(stand_ins):
        losses = importlib.import_module("loss")  # the checkout's loss.py, next to its model package
    optimizer = torch.optim.Adam(model.parameters(), LEARNING_RATE)
    frames = batch["pixel_values"].flatten(0, 1)
    inputs = [frames, batch["audio_embeds"].flatten(0, 1)]
    if official.repo == "AVS-C3N":
        inputs.append(batch["audio_logits"].flatten(0, 1))
    first_frame_masks = batch["labels"][:, 0]  # [B, H, W], as train.py reshapes its masks

    def step() -> float:
        with keep_on_cpu(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            if official.repo == "AVS-C3N":
                loss, _ = losses.IouSemanticAwareLoss(model(*inputs), first_frame_masks.unsqueeze(1))
            else:
                outputs = model(*inputs)[:4]
                loss = sum(losses.BCEIOU_loss(output, first_frame_masks) for output in outputs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return {"step": step, "state_dict": state, "model": model}


def our_training_step(variant: str, official_state: dict, similarity: torch.Tensor, batch: dict, dtype):
    """Our model with the official initial weights (and the official stochastic depth), trained as
    the trainer does: forward with labels, the model's loss, Adam at the official learning rate."""
    model = build_ours(variant, official_state, similarity, OFFICIAL_DROP_PATH_RATE[variant])
    device = batch["pixel_values"].device
    model = model.to(device).train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], LEARNING_RATE)

    def step() -> float:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def step_memory_mib(step, device: torch.device) -> float:
    """Memory one step needs above what the process holds before it: the CUDA allocator's peak, or
    the peak resident size (VmHWM, reset before the step) on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    reset_peak_memory()
    before = process_memory_mib("VmRSS")
    step()
    return process_memory_mib("VmHWM") - before


def measure_training(
    variant: str, checkout: Path, runs: int, device: torch.device, clips: int, size: int
) -> list[dict]:
    """One row per precision: median step of each side (interleaved), the memory of a step, and the
    loss of the first step (equal where nothing random runs: no stochastic depth)."""
    generator = torch.Generator().manual_seed(0)
    similarity = torch.rand(VISUAL_CLASSES, AUDIO_CLASSES, generator=generator)
    batch = training_batch(variant, clips, size, device)
    rows = []
    for name, dtype in TRAINING_PRECISIONS.items():
        row = {"model": variant, "precision": name, "batch": f"{clips} x {FRAMES} x 3 x {size} x {size}"}
        official = official_training_step(variant, checkout, batch, similarity, dtype)
        ours = our_training_step(variant, official.pop("state_dict"), similarity, batch, dtype)
        torch.manual_seed(0)
        try:
            row["official_first_loss"] = official["step"]()
        except (RuntimeError, TypeError) as error:  # e.g. the official C3N's NumPy Grad-CAM and bf16
            row["official_error"] = f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"
        torch.manual_seed(0)
        row["our_first_loss"] = ours()
        functions = [ours] if "official_error" in row else [official["step"], ours]
        seconds = interleaved_median_seconds(functions, runs, device)
        row["our_step_s"] = seconds[-1]
        row["our_step_memory_mib"] = step_memory_mib(ours, device)
        if "official_error" not in row:
            row["official_step_s"] = seconds[0]
            row["official_over_ours"] = seconds[0] / seconds[-1]
            row["official_step_memory_mib"] = step_memory_mib(official["step"], device)
        rows.append(row)
        del official, ours
    return rows


def training_to_markdown(rows: list[dict], machine: dict) -> str:
    lines = [
        (
            f"Measured on: {machine['device']}, {machine['threads']} threads, torch {machine['torch']}; "
            "one training step (forward, official loss, backward, Adam) on a batch of "
            f"{rows[0]['batch']}."
        ),
        "",
        (
            "| model | precision | official step (s) | our step (s) | official / ours | official step memory (MiB) "
            "| our step memory (MiB) | first loss official / ours |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if "official_error" in row:
            official = f"fails ({row['official_error']}) | {row['our_step_s']:.3f} | — | —"
            loss = f"— / {row['our_first_loss']:.4f}"
        else:
            official = (
                f"{row['official_step_s']:.3f} | {row['our_step_s']:.3f} | {row['official_over_ours']:.2f} "
                f"| {row['official_step_memory_mib']:.0f}"
            )
            loss = f"{row['official_first_loss']:.4f} / {row['our_first_loss']:.4f}"
        lines.append(
            f"| {row['model']} | {row['precision']} | {official} | {row['our_step_memory_mib']:.0f} | {loss} |"
        )
    return "\n".join(lines) + "\n"


def to_markdown(results: list[dict]) -> str:
    first = results[0]
    lines = [
        (
            f"Measured on: {first['device']}, {first['threads']} threads, torch {first['torch']}; "
            f"one {first['clip']} clip, fp32."
        ),
        "",
        (
            "| model | official params (M) | official latency (s) | official peak memory (MiB) "
            "| our latency (s) | official / ours | max abs logit diff |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results:
        lines.append(
            f"| {row['model']} | {row['official_params_m']:.2f} | {row['official_latency_s']:.3f} "
            f"| {row['official_peak_memory_mib']:.0f} | {row['our_latency_s']:.3f} "
            f"| {row['official_over_ours']:.2f} | {row['max_abs_logit_diff']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def chosen_models(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The models to measure, after checking the checkout and the packages the official code needs."""
    checkout = args.official_repo
    if not checkout.is_dir():
        parser.error(
            f"--official-repo {checkout} is not a folder; clone the official code first, e.g. "
            f"git clone {REPOS['PCMANet'].url} (or {REPOS['AVS-C3N'].url})"
        )
    models = args.model or [variant for variant in OFFICIAL_MODELS if not missing_files(checkout, variant)]
    if not models:
        parser.error(
            f"--official-repo {checkout} holds neither official checkout: expected the work tree of "
            f"{REPOS['PCMANet'].url} (with {required_files('pcmanet-resnet50')[0]}) or of "
            f"{REPOS['AVS-C3N'].url} (with {required_files('c3n-pvt-v2-b5')[0]})"
        )
    for variant in models:
        missing = missing_files(checkout, variant)
        if missing:
            repo = REPOS[OFFICIAL_MODELS[variant].repo]
            parser.error(
                f"--model {variant} needs a work tree of {repo.url} as --official-repo; "
                f"not found under {checkout}: {', '.join(missing)}"
            )
        for package in REPOS[OFFICIAL_MODELS[variant].repo].needs:
            if importlib.util.find_spec(package) is None:
                parser.error(
                    f"the official {variant} code imports {package!r}, which is not installed: "
                    f"pip install {package}"
                )
    return list(dict.fromkeys(models))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--official-repo", required=True, type=Path, help="work tree of the official PCMANet or AVS-C3N repo"
    )
    parser.add_argument(
        "--model",
        action="append",
        choices=list(OFFICIAL_MODELS),
        help="model to measure (repeatable); default: every model the checkout provides",
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs per model (median reported)")
    parser.add_argument(
        "--training",
        action="store_true",
        help="time the training step (forward, official loss, backward, Adam) in fp32 and bf16 autocast "
        "instead of the inference forward",
    )
    parser.add_argument("--batch-size", type=int, default=2, help="--training: clips of 5 frames (default 2)")
    parser.add_argument(
        "--image-size", type=int, default=SIZE, help="--training: frame size (default 224; C3N needs 224)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--markdown", help="write the Markdown table to this file")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    models = chosen_models(parser, args)

    if args.training:
        run_training(args, models)
        return
    if args.in_process:  # child process: one model, result on stdout
        result = measure(models[0], args.official_repo.resolve(), args.runs, torch.device(args.device))
        print(json.dumps(result))
        return
    results = []
    for variant in models:
        arguments = ["--in-process", "--official-repo", str(args.official_repo), "--model", variant]
        results.append(run_child(__file__, *arguments, "--runs", str(args.runs), "--device", args.device))
        print(
            f"{variant}: official {results[-1]['official_latency_s']:.3f} s, ours {results[-1]['our_latency_s']:.3f} s"
        )
    write_report(results, to_markdown(results), args.json, args.markdown)


def run_training(args: argparse.Namespace, models: list[str]) -> None:
    """`--training`: one child process per model (its own peak memory), a table of training steps."""
    device = torch.device(args.device)
    if args.in_process:
        rows = measure_training(
            models[0], args.official_repo.resolve(), args.runs, device, args.batch_size, args.image_size
        )
        print(json.dumps(rows))
        return
    rows = []
    for variant in models:
        arguments = [
            "--in-process",
            "--training",
            "--official-repo",
            str(args.official_repo),
            "--model",
            variant,
        ]
        sizes = ["--batch-size", str(args.batch_size), "--image-size", str(args.image_size)]
        rows += run_child(__file__, *arguments, *sizes, "--runs", str(args.runs), "--device", args.device)
    machine = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else processor_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    write_report(
        {"machine": machine, "training": rows}, training_to_markdown(rows, machine), args.json, args.markdown
    )


if __name__ == "__main__":
    main()
