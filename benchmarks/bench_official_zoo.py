"""Time the official TPAVI (AVSBench) and AVSegFormer forwards next to ours, with the same weights.

The official code is not part of this project and is never copied into it: the script imports
it at run time from checkouts you make yourself and point to:

    git clone https://github.com/OpenNLPLab/AVSBench        # TPAVI (ResNet-50, PVT-v2-b5)
    git clone https://github.com/vvvb-github/AVSegFormer    # AVSegFormer (ResNet-50, PVT-v2-b5)

    python benchmarks/bench_official_zoo.py --avsbench-repo AVSBench --avsegformer-repo AVSegFormer \
        --model tpavi-resnet50-s4 --model avsegformer-resnet50-s4 --runs 3 --markdown table.md

Each model runs in its own process with one torch thread. The official module is built from the
checkout (TPAVI: `Pred_endecoder` with the arguments of every official `test.sh`; AVSegFormer:
`build_model(**cfg.model)` of the official S4 config), and our model is made from its state dict
by the project's converter, so both compute the same masks (the report gives the largest logit
difference). The input is one clip of 5 frames, 224x224, fp32, eval mode, `torch.no_grad()`:
VGGish embeddings for TPAVI, log-mel examples for AVSegFormer (VGGish runs inside both models).
Per side: parameters, GFLOPs (`torch.utils.flop_counter`; neither side's `grid_sample` in the
deformable attention is counted), the median latency of `--runs` rounds that time the official
forward and then ours (alternating, so a slow spell of a shared machine hits both), and the
memory of one forward: the peak resident size (`VmHWM`, reset through `/proc/self/clear_refs`)
minus the resident size before it. The child runs with `MALLOC_MMAP_THRESHOLD_` fixed so that
freed tensors go back to the system and the resident size before each forward is the weights.

Stand-ins (only while the official files are imported or run; the checkouts stay unmodified):

- the timm, torchvision (and matplotlib, cv2) modules of `bench_official.import_stand_ins`;
- TPAVI: `initialize_weights` / `initialize_pvt_weights` (ImageNet weights, read from paths of the
  official config in `__init__`) do nothing; `torch.Tensor.cuda` returns the tensor itself;
- AVSegFormer: empty `resampy` and `soundfile` (imported by the VGGish wav reader, not used on
  log-mel input); a `MultiScaleDeformableAttention` module whose functions raise, as the compiled
  op does for CPU tensors, so the official `MSDeformAttn.forward` takes its own `except:` branch,
  `ms_deform_attn_core_pytorch`; config overrides `backbone.init_weights_path=None` and
  `vggish.freeze_audio_extractor=False` (both only load files in `__init__`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch
from bench_inference import FRAMES, SIZE, interleaved_median_seconds, machine_info, run_child, write_report
from bench_official import _module, import_stand_ins, modules_in_place, step_memory_mib
from torch.utils.flop_counter import FlopCounterMode

from avs_models.models.avsegformer.convert_avsegformer_original_to_hf import convert_avsegformer_checkpoint
from avs_models.models.tpavi.convert_tpavi_original_to_hf import convert_tpavi_checkpoint

# Large freed tensors go back to the system at once (no heap growth between forwards).
MALLOC_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 20)}


@dataclass(frozen=True)
class OfficialModel:
    family: str  # "tpavi" or "avsegformer"
    source: str  # TPAVI: module under avs_scripts/avs_s4; AVSegFormer: config file in the checkout
    weight_loader: str | None = None  # TPAVI: the constructor's ImageNet loader, made a no-op


OFFICIAL_MODELS = {
    "tpavi-resnet50-s4": OfficialModel("tpavi", "model.ResNet_AVSModel", "initialize_weights"),
    "tpavi-pvt-v2-b5-s4": OfficialModel("tpavi", "model.PVT_AVSModel", "initialize_pvt_weights"),
    "avsegformer-resnet50-s4": OfficialModel("avsegformer", "config/s4/AVSegFormer_res50_s4.py"),
    "avsegformer-pvt-v2-b5-s4": OfficialModel("avsegformer", "config/s4/AVSegFormer_pvt2_s4.py"),
}


def _cuda_is_identity():
    return mock.patch.object(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)


def build_official_tpavi(official: OfficialModel, checkout: Path) -> torch.nn.Module:
    """`Pred_endecoder(channel=256, tpavi_stages=[0, 1, 2, 3], tpavi_va_flag=True)`, as every
    official test.sh builds it (S4 and MS3 share these model files)."""
    sys.path.insert(0, str(checkout / "avs_scripts" / "avs_s4"))
    with modules_in_place(import_stand_ins()):
        module = importlib.import_module(official.source)
    no_imagenet_weights = mock.patch.object(module.Pred_endecoder, official.weight_loader, lambda self: None)
    with no_imagenet_weights, _cuda_is_identity():
        model = module.Pred_endecoder(
            channel=256, config=None, tpavi_stages=[0, 1, 2, 3], tpavi_vv_flag=False, tpavi_va_flag=True
        )
    return model.eval()


def _deformable_op_stand_in():
    def unavailable(*args, **kwargs):
        raise RuntimeError("the compiled MultiScaleDeformableAttention op takes CUDA tensors only")

    return _module(
        "MultiScaleDeformableAttention",
        ms_deform_attn_forward=unavailable,
        ms_deform_attn_backward=unavailable,
    )


def build_official_avsegformer(official: OfficialModel, checkout: Path) -> torch.nn.Module:
    """`build_model(**cfg.model)` of the official config, without its pretrained-file loading."""
    config = runpy.run_path(str(checkout / official.source))["model"]
    config["backbone"]["init_weights_path"] = None
    config["vggish"]["freeze_audio_extractor"] = False
    stand_ins = {
        **import_stand_ins(),
        "resampy": _module("resampy"),
        "soundfile": _module("soundfile"),
        "MultiScaleDeformableAttention": _deformable_op_stand_in(),
    }
    sys.path.insert(0, str(checkout))
    with modules_in_place(stand_ins):
        model_package = importlib.import_module("model")
        importlib.import_module("ops.functions.ms_deform_attn_func")  # binds the op stand-in
    return model_package.build_model(**config).eval()


def clip_inputs() -> dict[str, torch.Tensor]:
    """One clip of 5 frames (seeded): frames, VGGish embeddings and log-mel examples."""
    generator = torch.Generator().manual_seed(0)
    return {
        "pixel_values": torch.randn(1, FRAMES, 3, SIZE, SIZE, generator=generator),
        "audio_embeds": torch.randn(1, FRAMES, 128, generator=generator),
        "input_features": torch.randn(1, FRAMES, 1, 96, 64, generator=generator),
    }


def forwards(variant: str, checkouts: dict[str, Path]):
    """The official and our forward (each returning the mask logits as [frames, classes, H, W]) and
    both modules."""
    official = OFFICIAL_MODELS[variant]
    inputs = clip_inputs()
    frames = inputs["pixel_values"].flatten(0, 1)
    torch.manual_seed(0)
    if official.family == "tpavi":
        official_model = build_official_tpavi(official, checkouts["tpavi"])
        ours, _ = convert_tpavi_checkpoint(official_model.state_dict())
        audio = inputs["audio_embeds"].flatten(0, 1)

        def official_forward():
            with _cuda_is_identity():
                return official_model(frames, audio)[0]

        our_inputs = {"pixel_values": inputs["pixel_values"], "audio_embeds": inputs["audio_embeds"]}
    else:
        official_model = build_official_avsegformer(official, checkouts["avsegformer"])
        ours, _ = convert_avsegformer_checkpoint(official_model.state_dict())
        log_mel = inputs["input_features"].flatten(0, 1)

        def official_forward():
            return official_model(log_mel, frames)[0]

        our_inputs = {"pixel_values": inputs["pixel_values"], "input_features": inputs["input_features"]}

    def our_forward():
        return ours(**our_inputs).logits.flatten(0, 1)

    return official_forward, our_forward, official_model, ours


def gflops(forward) -> float:
    with FlopCounterMode(display=False) as counter:
        forward()
    return counter.get_total_flops() / 1e9


def measure(variant: str, checkouts: dict[str, Path], runs: int) -> dict:
    torch.set_num_threads(1)
    official_forward, our_forward, official_model, ours = forwards(variant, checkouts)
    sides = {"official": (official_forward, official_model), "ours": (our_forward, ours)}
    row = {"model": variant, "clip": f"1 x {FRAMES} x 3 x {SIZE} x {SIZE}"}
    with torch.no_grad():
        row["max_abs_logit_diff"] = (official_forward() - our_forward()).abs().max().item()
        latencies = interleaved_median_seconds([official_forward, our_forward], runs, torch.device("cpu"))
        for (side, (forward, module)), latency in zip(sides.items(), latencies):
            row[f"{side}_params_m"] = sum(parameter.numel() for parameter in module.parameters()) / 1e6
            row[f"{side}_gflops"] = gflops(forward)
            row[f"{side}_latency_s"] = latency
            row[f"{side}_forward_memory_mib"] = step_memory_mib(forward, torch.device("cpu"))
    row["official_over_ours"] = row["official_latency_s"] / row["ours_latency_s"]
    return row


def to_markdown(results: list[dict], machine: dict) -> str:
    lines = [
        (
            f"Measured on: {machine['processor']}, 1 torch thread, torch {machine['torch']}; one clip of "
            f"{results[0]['clip']}, fp32, eval mode, `torch.no_grad()`, same weights on both sides."
        ),
        "",
        (
            "| model | side | params (M) | GFLOPs | latency (s) | forward memory (MiB) | official / ours "
            "| max logit diff |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results:
        for side in ("official", "ours"):
            shared = " | "
            if side == "official":
                shared = f"{row['official_over_ours']:.2f} | {row['max_abs_logit_diff']:.1e}"
            lines.append(
                f"| {row['model']} | {side} | {row[f'{side}_params_m']:.2f} | {row[f'{side}_gflops']:.1f} "
                f"| {row[f'{side}_latency_s']:.2f} | {row[f'{side}_forward_memory_mib']:.0f} | {shared} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avsbench-repo", type=Path, help="checkout of OpenNLPLab/AVSBench (TPAVI)")
    parser.add_argument("--avsegformer-repo", type=Path, help="checkout of vvvb-github/AVSegFormer")
    parser.add_argument(
        "--model",
        action="append",
        choices=sorted(OFFICIAL_MODELS),
        help="model to measure (repeatable); default: every model whose checkout is given",
    )
    parser.add_argument("--runs", type=int, default=3, help="timed runs per model (median reported)")
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--markdown", help="write the Markdown table to this file")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    checkouts = {"tpavi": args.avsbench_repo, "avsegformer": args.avsegformer_repo}
    for family, option in (("tpavi", "--avsbench-repo"), ("avsegformer", "--avsegformer-repo")):
        if checkouts[family] is not None and not checkouts[family].is_dir():
            parser.error(f"{option} {checkouts[family]}: no such folder")
    models = args.model or [name for name, model in OFFICIAL_MODELS.items() if checkouts[model.family]]
    for name in models:
        if checkouts[OFFICIAL_MODELS[name].family] is None:
            option = "--avsbench-repo" if OFFICIAL_MODELS[name].family == "tpavi" else "--avsegformer-repo"
            parser.error(f"--model {name} needs {option}")
    if not models:
        parser.error("give --avsbench-repo and/or --avsegformer-repo")
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")

    if args.in_process:  # child process: one model, result on stdout
        sys.dont_write_bytecode = True  # leave the checkouts as they were
        resolved = {family: path.resolve() for family, path in checkouts.items() if path is not None}
        print(json.dumps(measure(models[0], resolved, args.runs)))
        return
    os.environ.update(MALLOC_ENVIRONMENT)
    options = (("--avsbench-repo", args.avsbench_repo), ("--avsegformer-repo", args.avsegformer_repo))
    repos = [argument for option, path in options if path is not None for argument in (option, str(path))]
    results = [
        run_child(__file__, "--in-process", *repos, "--model", name, "--runs", str(args.runs))
        for name in models
    ]
    machine = {**machine_info(), "threads": 1}
    report = {"machine": machine, "results": results}
    write_report(report, to_markdown(results, machine), args.json, args.markdown)


if __name__ == "__main__":
    main()
