"""Publishing model folders: the model card (`README.md`) that every converted, trained or evaluated
folder gets, and the upload of a folder to the Hub (`avs-models push`, and training's `push_to_hub`).

A card is written from three sources:

- the folder's own files: `config.json` (what the model is) and the saved processor (what it takes);
- the family's facts in `families.json` (paper, official code, license, parity figure, limits);
- the folder's `model_card.json`, the record of how the model was made (the conversion command, or
  the training run) and of the scores `avs-models evaluate` measured on it.

Every writer updates `model_card.json` and writes `README.md` again from all three, through
`huggingface_hub.ModelCard` / `ModelCardData`, so a card never goes stale and no recorded fact is
lost. The card's metadata carries `library_name`, `pipeline_tag` (`image-segmentation`: the Hub
has no audio-visual segmentation task, so an `audio-visual-segmentation` tag says it), `license`,
`datasets`, `tags` and a `model-index` with the recorded evaluation results.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

from .families import family_facts

CARD_NAME = "README.md"
CARD_RECORD_NAME = "model_card.json"
LIBRARY_NAME = "transformers"
PIPELINE_TAG = "image-segmentation"
TASK_TAG = "audio-visual-segmentation"
TASK_NAME = "Audio-visual segmentation"
# Weights go to the Hub as safetensors only: pickled files in a folder are left out of an upload.
PICKLED_WEIGHT_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")
_SUBSET_NAMES = {"s4": "S4 (single source)", "ms3": "MS3 (multiple sources)", "avss": "AVSS (semantic, 71 classes)"}
_DATA_FOLDERS = {"s4": "Single-source", "ms3": "Multi-sources", "avss": "AVSS"}
# Video ids of the clips `avs-models make-synthetic` writes.
_SYNTHETIC_VIDEO_ID = re.compile(r"syn\d+_")


# ---------------------------------------------------------------------------------------- records
def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_card_record(model_dir: str | Path) -> dict:
    """How the model in `model_dir` was made and its recorded evaluations (`model_card.json`), or `{}`."""
    return _read_json(Path(model_dir) / CARD_RECORD_NAME) or {}


def _update_record(model_dir: str | Path, **changes) -> None:
    record = {**read_card_record(model_dir), **changes}
    (Path(model_dir) / CARD_RECORD_NAME).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def _portable_arguments(arguments: Sequence[str]) -> list[str]:
    """Command-line arguments with every path shortened to its file name: a card names no machine's folders."""
    return [Path(argument).name if ("/" in argument or "\\" in argument) else argument for argument in arguments]


def write_conversion_card(model_dir: str | Path, arguments: Sequence[str] | None = None) -> Path:
    """Record that `model_dir` was converted from an official checkpoint, with the converter's
    command-line `arguments` (`None`: this process's, `sys.argv[1:]`), and write its card."""
    config = _read_json(Path(model_dir) / "config.json") or {}
    facts = family_facts(config.get("model_type", "")) or {}
    arguments = sys.argv[1:] if arguments is None else list(arguments)
    module = facts.get("conversion_module", "the family's converter")
    _update_record(
        model_dir,
        made_by={"how": "conversion", "command": shlex.join(["python", "-m", module, *_portable_arguments(arguments)])},
    )
    return write_model_card(model_dir)


def write_training_card(model_dir: str | Path, training_config: dict, trainer_state: dict) -> Path:
    """Record the training run that wrote `model_dir` (its configuration, epochs done, best validation
    mIoU) and write its card."""
    data_dir = training_config.get("data_dir")
    subset = training_config.get("subset")
    _update_record(
        model_dir,
        made_by={
            "how": "training",
            "subset": subset,
            "data": _describe_data(data_dir, subset),
            "num_epochs": training_config.get("num_epochs"),
            "epochs_done": trainer_state.get("epoch"),
            "image_size": training_config.get("image_size"),
            "batch_size": training_config.get("batch_size"),
            "optimizer": training_config.get("optimizer"),
            "best_val_miou": trainer_state.get("best_miou"),
        },
    )
    return write_model_card(model_dir)


def record_evaluation(model_dir: str | Path, result: dict, data_dir: str | Path) -> Path:
    """Add one `avs_models.evaluation.evaluate_split` result (clean data) to the card of `model_dir`,
    replacing an earlier one of the same data, subset, split and definition, and write the card."""
    entry = {
        "data": _describe_data(data_dir, result["subset"]),
        "subset": result["subset"],
        "split": result["split"],
        "miou": float(result["miou"]),
        "fscore": float(result["fscore"]),
        "definition": result["definition"],
        "fscore_batch_videos": result.get("fscore_batch_videos"),
        "num_videos": result.get("num_videos"),
    }
    same = ("data", "subset", "split", "definition", "fscore_batch_videos")
    kept = [
        old
        for old in read_card_record(model_dir).get("evaluations", [])
        if any(old.get(key) != entry[key] for key in same)
    ]
    _update_record(model_dir, evaluations=[*kept, entry])
    return write_model_card(model_dir)


def _describe_data(data_dir: str | Path | None, subset: str | None) -> dict:
    """The data a model was trained or scored on: AVSBench, or the synthetic clips of `make-synthetic`
    (told apart by their video ids), with the folder's name."""
    folder = Path(data_dir) if data_dir else None
    synthetic = False
    if folder is not None and subset in _DATA_FOLDERS:
        for metadata in sorted((folder / _DATA_FOLDERS[subset]).glob("*.csv")):
            with metadata.open(encoding="utf-8") as handle:
                handle.readline()  # header
                first = handle.readline().split(",")[0]
            synthetic = bool(_SYNTHETIC_VIDEO_ID.match(first))
            break
    return {
        "dataset": "synthetic-avsbench" if synthetic else "avsbench",
        "name": "synthetic AVSBench-layout clips (avs-models make-synthetic)" if synthetic else "AVSBench",
        "folder": folder.name if folder is not None else None,
    }


# ------------------------------------------------------------------------------------------- card
def write_model_card(model_dir: str | Path, repo_id: str | None = None) -> Path:
    """Write `README.md` in `model_dir` from its files, its family's facts and its record; `repo_id`
    is what the card's loading snippets load (default: the folder's name)."""
    path = Path(model_dir) / CARD_NAME
    render_model_card(model_dir, repo_id).save(path)
    return path


def render_model_card(model_dir: str | Path, repo_id: str | None = None) -> ModelCard:
    """The model card of `model_dir` (see the module docstring), without writing it."""
    from transformers import AutoConfig

    from .models.labels import is_semantic_segmentation

    from .commands.predict import check_model_dir

    model_dir = Path(model_dir)
    check_model_dir(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    facts = family_facts(config.model_type) or {}
    record = read_card_record(model_dir)
    made_by = record.get("made_by", {})
    evaluations = record.get("evaluations", [])
    processor = _read_json(model_dir / "processor_config.json")
    segmentation = facts.get("kind", "segmentation") == "segmentation"
    model_id = repo_id or model_dir.name
    model_name = model_id.split("/")[-1]
    family_name = facts.get("name", type(config).__name__.removesuffix("Config"))
    semantic = segmentation and is_semantic_segmentation(config)

    subsets = sorted({made_by.get("subset")} - {None} | {entry["subset"] for entry in evaluations})
    data_kinds = [made_by["data"]] if "data" in made_by else []
    data_kinds += [entry["data"] for entry in evaluations]
    converted = made_by.get("how") == "conversion"
    if converted and segmentation:
        data_kinds.append(_describe_data(None, None))  # the authors trained on AVSBench
    datasets = sorted({data["dataset"] for data in data_kinds}) or None
    license_facts = facts.get("license", {}) if converted else {}
    license_id, license_note = _license(license_facts, made_by)
    eval_results = [result for entry in evaluations for result in _eval_results(entry)]
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG if segmentation else "audio-classification",
        license=license_id,
        license_name=license_facts.get("name"),
        license_link=license_facts.get("link"),
        datasets=datasets,
        tags=[TASK_TAG, "avs-models", config.model_type, "custom_code", *(f"avsbench-{s}" for s in subsets)],
        metrics=["mean_iou", "f_score"] if evaluations else None,
        # The model-index names the model; without results there is no index to name.
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(files("avs_models").joinpath("model_card_template.md")),
        model_name=model_name,
        summary=_summary(family_name, segmentation, semantic, config),
        paper=facts.get("paper"),
        official_repository=facts.get("official_repository"),
        architecture=_architecture(config, segmentation),
        provenance=_provenance(made_by, facts),
        conversion_command=made_by.get("command"),
        parity=facts.get("parity") if made_by.get("how") == "conversion" else None,
        evaluations=[{**entry, "data": _data_text(entry["data"]), "definition_text": _definition_text(entry)} for entry in evaluations],
        snippet_with_package=_snippet(model_id, config, processor, segmentation, with_package=True),
        snippet_without_package=_snippet(model_id, config, processor, segmentation, with_package=False),
        inputs=_inputs(config, processor, segmentation),
        limits=_limits(facts, made_by, segmentation, semantic),
        license_note=license_note,
        citation=facts.get("citation"),
    )


def _license(license_facts: dict, made_by: dict) -> tuple[str, str]:
    """The Hub license id and the card's license text: the official checkpoint's for a conversion,
    the publisher's choice otherwise."""
    if license_facts:
        return license_facts["id"], license_facts["note"]
    if made_by.get("how") == "training":
        return "other", (
            "Trained with avs-models by its publisher, who sets the license of these weights (edit `license` "
            "above). Check the terms of the training data too: AVSBench's videos come from YouTube."
        )
    return "other", "The license of these weights is not recorded: set `license` above."


def _summary(family_name: str, segmentation: bool, semantic: bool, config) -> str:
    if not segmentation:
        return (
            f"The {family_name} audio encoder as a Transformers model: it turns each second of sound into an "
            "embedding (and AudioSet class scores when it has a classification head), for the audio-visual "
            "segmentation models of avs-models."
        )
    output = (
        f"a class map per frame over {config.num_labels} classes (AVSS)" if semantic else "a binary mask per frame"
    )
    return (
        f"{family_name} for audio-visual segmentation: given a video and its sound, it masks the objects that "
        f"make the sound, one frame per second ({output})."
    )


def _architecture(config, segmentation: bool) -> str:
    name = (config.architectures or [type(config).__name__])[0]
    if not segmentation:
        return f"`{name}`"
    backbone = getattr(config, "backbone_config", None)
    audio = getattr(config, "audio_config", None)
    audio_text = (
        f"`{audio.model_type}` audio encoder inside the model"
        if audio is not None
        else "precomputed audio embeddings (`audio_embeds`, no audio encoder inside)"
    )
    backbone_text = f"`{backbone.model_type}` visual backbone, " if backbone is not None else ""
    return f"`{name}`: {backbone_text}{audio_text}"


def _provenance(made_by: dict, facts: dict) -> str:
    if made_by.get("how") == "conversion":
        return (
            f"Converted from the authors' checkpoint ({facts.get('official_repository', 'the official code')}) "
            "with the avs-models converter; every tensor the official forward uses is loaded, checked by name "
            "and shape:"
        )
    if made_by.get("how") == "training":
        best = made_by.get("best_val_miou")
        best_text = f"; best validation mIoU {best:.4f}" if best is not None else ""
        return (
            f"Trained with `avs-models train` on {_data_text(made_by['data'])}, subset "
            f"{_SUBSET_NAMES.get(made_by.get('subset'), made_by.get('subset'))}: {made_by.get('epochs_done')} of "
            f"{made_by.get('num_epochs')} epochs, batch size {made_by.get('batch_size')}, "
            f"{made_by.get('image_size')}x{made_by.get('image_size')} frames, optimizer "
            f"`{json.dumps(made_by.get('optimizer'))}`{best_text}."
        )
    return "Saved with avs-models (`save_pretrained`); no conversion or training run is recorded for it."


def _data_text(data: dict) -> str:
    return data["name"] + (f" (folder `{data['folder']}`)" if data.get("folder") else "")


def _definition_text(entry: dict) -> str:
    batch = entry.get("fscore_batch_videos")
    if batch is None:
        return f"{entry['definition']}"
    return (
        f"{entry['definition']}; F-score maximised over thresholds per test batch of {batch} "
        f"video{'s' if batch > 1 else ''}"
    )


def _eval_results(entry: dict) -> list[EvalResult]:
    common = {
        "task_type": PIPELINE_TAG,
        "task_name": TASK_NAME,
        "dataset_type": entry["data"]["dataset"],
        "dataset_name": f"{entry['data']['name']} {entry['subset'].upper()}",
        "dataset_config": entry["subset"],
        "dataset_split": entry["split"],
        "metric_config": entry["definition"],
        "metric_args": {"fscore_batch_videos": entry["fscore_batch_videos"]}
        if entry.get("fscore_batch_videos") is not None
        else None,
    }
    return [
        EvalResult(metric_type="mean_iou", metric_name="mIoU", metric_value=round(entry["miou"], 6), **common),
        EvalResult(
            metric_type="f_score", metric_name="F-score (beta^2 = 0.3)", metric_value=round(entry["fscore"], 6), **common
        ),
    ]


def _clip_shape(config, processor: dict | None) -> tuple[int, int]:
    """(frames per clip, frame side) the model expects: the saved processor's, else 5 and 224."""
    if processor is None:
        return 5, 224
    return processor.get("num_frames", 5), processor.get("image_processor", {}).get("size", {}).get("height", 224)


def _audio_inputs(config) -> tuple[str, str, str]:
    """(argument name, example tensor expression for one clip of T frames, description) of the audio input."""
    audio = getattr(config, "audio_config", None)
    if audio is None:
        dim = getattr(config, "audio_embed_dim", 128)
        return "audio_embeds", f"torch.randn(1, T, {dim})", f"`audio_embeds` `[clips, frames, {dim}]`: one audio embedding per second (VGGish's for the official models)"
    if audio.model_type == "vggish":
        shape = f"1, {audio.num_frames}, {audio.num_mel_bins}"
        return "input_features", f"torch.randn(1, T, {shape})", f"`input_features` `[clips, frames, {shape}]`: VGGish log-mel examples, one per second of 16 kHz audio"
    rate = getattr(audio, "sampling_rate", 16000)
    return "input_values", f"torch.randn(1, T, {rate})", f"`input_values` `[clips, frames, {rate}]`: one second of {rate} Hz mono audio per frame"


def _snippet(model_id: str, config, processor: dict | None, segmentation: bool, with_package: bool) -> str:
    trust = "" if with_package else ", trust_remote_code=True"
    if not segmentation:
        return "\n".join(
            [
                "import numpy as np",
                "import torch",
                *(["import avs_models  # registers the package's models with the Auto classes"] if with_package else []),
                "from transformers import AutoFeatureExtractor, AutoModel",
                "",
                f'feature_extractor = AutoFeatureExtractor.from_pretrained("{model_id}"{trust})',
                f'model = AutoModel.from_pretrained("{model_id}"{trust}).eval()',
                "waveform = np.zeros(32000, dtype=np.float32)  # two seconds of your 16 kHz mono sound",
                'features = feature_extractor(waveform, sampling_rate=16000, return_tensors="pt")',
                "with torch.no_grad():",
                "    outputs = model(**features)",
                "print(outputs[0].shape)",
            ]
        )
    if with_package and processor is not None and getattr(config, "audio_config", None) is not None:
        return "\n".join(
            [
                "import avs_models  # registers the audio-visual-segmentation task and the models",
                "from transformers import pipeline",
                "",
                f'segmenter = pipeline("audio-visual-segmentation", model="{model_id}")',
                'seconds = segmenter("clip.mp4")  # your video, with its sound',
                "# One dict per second of video: start, time, mask ([H, W] uint8 at the video's size)",
                "# and, for AVSS models, the labels and scores of the classes found.",
                'print(len(seconds), seconds[0]["mask"].shape)',
            ]
        )
    frames, side = _clip_shape(config, processor)
    audio_name, audio_tensor, _ = _audio_inputs(config)
    lines = [
        "import torch",
        *(["import avs_models  # registers the package's models with the Auto classes"] if with_package else []),
        "from transformers import AutoModel",
        "",
        f'model = AutoModel.from_pretrained("{model_id}"{trust}).eval()',
        f"T = {frames}  # frames per clip, one per second",
        "inputs = {",
        f'    "pixel_values": torch.randn(1, T, 3, {side}, {side}),  # frames resized and normalised (ImageNet mean/std)',
        f'    "{audio_name}": {audio_tensor},',
    ]
    if config.model_type == "c3n" and audio_name == "audio_embeds":
        lines.append(f'    "audio_logits": torch.randn(1, T, {config.num_audio_classes}),  # AudioSet scores of the audio head')
    lines += [
        "}",
        "with torch.no_grad():",
        "    logits = model(**inputs).logits  # [1, T, num_labels, H, W]",
        "masks = logits.sigmoid() > 0.5 if logits.shape[2] == 1 else logits.argmax(dim=2)",
        "print(masks.shape)",
    ]
    return "\n".join(lines)


def _inputs(config, processor: dict | None, segmentation: bool) -> list[str]:
    if not segmentation:
        return ["Mono sound at 16 kHz (other rates are resampled by the feature extractor with a band-limited filter)."]
    frames, side = _clip_shape(config, processor)
    _, _, audio_text = _audio_inputs(config)
    lines = [
        f"`pixel_values` `[clips, frames, 3, {side}, {side}]`: one RGB frame per second, resized to {side}x{side} "
        "and normalised with the ImageNet mean and standard deviation.",
        audio_text + ".",
    ]
    if processor is not None:
        lines.append(
            f"The saved processor (`AudioVisualProcessor`) prepares both from a video file, in clips of {frames} "
            "seconds; the pipeline and `avs-models predict` use it."
        )
    else:
        lines.append(
            "No processor is saved with this model: build one with `avs_models.processing.processor_for(config)`, "
            "or prepare the tensors yourself."
        )
    return lines


def _limits(facts: dict, made_by: dict, segmentation: bool, semantic: bool) -> list[str]:
    limits = list(facts.get("limits", []))
    if segmentation:
        limits += [
            "One mask per second of video (the frame shown at the end of each second, as AVSBench samples "
            "them); motion within a second is not followed.",
            "The masks follow the sound: a visible object that makes no sound is left out by design.",
        ]
        if semantic:
            limits.append("Class maps cover the 70 AVSBench-semantic classes plus background; other sources get the closest class.")
    if made_by.get("data", {}).get("dataset") == "synthetic-avsbench":
        limits.append("Trained on synthetic clips (coloured shapes and tones): a demonstration model, not for real videos.")
    elif made_by.get("how") in ("training", "conversion") and segmentation:
        limits.append(
            "Trained on AVSBench (YouTube clips of a few dozen sound categories): sounds and objects outside them "
            "are segmented less reliably."
        )
    return limits


# ------------------------------------------------------------------------------------------- push
@dataclass
class UploadPlan:
    """What `push_folder` sends: the folder's files after `upload_folder`'s own filters, and the card."""

    model_dir: Path
    files: list[str]
    left_out: list[str]
    ignore_patterns: list[str]
    card: str


def plan_upload(model_dir: str | Path, repo_id: str) -> UploadPlan:
    """The files `upload_folder` will send from `model_dir` and the card written for `repo_id`.

    The files are those `HfApi.upload_folder` selects with `ignore_patterns=PICKLED_WEIGHT_PATTERNS`
    (it adds its own defaults, such as `.git/`), by the same filter function it uses; `README.md` is
    in the list, as the push writes it before uploading.
    """
    from .commands.predict import check_model_dir

    model_dir = Path(model_dir)
    check_model_dir(model_dir)
    present = sorted(
        path.relative_to(model_dir.resolve()).as_posix() for path in model_dir.resolve().glob("**/*") if path.is_file()
    )
    if not any(name.endswith(".safetensors") for name in present):
        raise ValueError(f"{model_dir} holds no safetensors weights: save the model with save_pretrained first")
    ignore_patterns = list(PICKLED_WEIGHT_PATTERNS)
    selected = set(
        filter_repo_objects([*present, CARD_NAME], ignore_patterns=[*ignore_patterns, *DEFAULT_IGNORE_PATTERNS])
    )
    return UploadPlan(
        model_dir=model_dir,
        files=sorted(selected),
        left_out=[name for name in present if name not in selected],
        ignore_patterns=ignore_patterns,
        card=str(render_model_card(model_dir, repo_id)),
    )


def push_folder(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
    api: HfApi | None = None,
) -> UploadPlan:
    """Upload `model_dir` (weights as safetensors, config, processor, code, card) to the Hub repository
    `repo_id` with `HfApi.upload_folder`, creating the repository (and the `revision` branch) when
    missing. The card is written for `repo_id` first. With `dry_run`, nothing is written or sent:
    the returned plan says what would be."""
    plan = plan_upload(model_dir, repo_id)
    if dry_run:
        return plan
    (plan.model_dir / CARD_NAME).write_text(plan.card, encoding="utf-8")
    api = api or HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    api.upload_folder(
        folder_path=str(plan.model_dir),
        repo_id=repo_id,
        revision=revision,
        commit_message=commit_message or f"Upload {plan.model_dir.name} with avs-models",
        ignore_patterns=list(plan.ignore_patterns),
    )
    return plan


__all__ = [
    "CARD_NAME",
    "CARD_RECORD_NAME",
    "PICKLED_WEIGHT_PATTERNS",
    "UploadPlan",
    "plan_upload",
    "push_folder",
    "read_card_record",
    "record_evaluation",
    "render_model_card",
    "write_conversion_card",
    "write_model_card",
    "write_training_card",
]
