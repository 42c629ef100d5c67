"""Every folder the package saves loads where `avs_models` is not installed, and gives the same outputs.

Each kind of folder (every audio encoder alone and as a classifier, their feature extractors,
PCMANet, TPAVI and AVSegFormer with and without an embedded VGGish, C3N with VGGish / PANNs /
BEATs / a Transformers audio classifier) is saved with `save_pretrained`; one subprocess, in which `import avs_models`
fails and the working tree's `src` is not on the path, loads them all with
`Auto*.from_pretrained(folder, trust_remote_code=True)` and runs them on the same inputs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_users import run_without_the_package
from test_audio_encoders_common import BeatsModelTester, PannsModelTester, VGGishModelTester
from test_avsegformer import tiny_config as tiny_avsegformer_config
from test_c3n import tiny_config as tiny_c3n_config
from test_pcmanet import clip_inputs, tiny_config as tiny_pcmanet_config
from test_tpavi import TINY_VGGISH, tiny_model as tiny_tpavi
from transformers import ASTConfig, PreTrainedModel

from avs_models import (
    AVSegFormerForAudioVisualSegmentation,
    BeatsFeatureExtractor,
    BeatsForAudioClassification,
    BeatsModel,
    C3NForAudioVisualSegmentation,
    PannsFeatureExtractor,
    PannsForAudioClassification,
    PannsModel,
    PCMANetForAudioVisualSegmentation,
    VGGishFeatureExtractor,
    VGGishForAudioClassification,
    VGGishModel,
)

BATCH, FRAMES, IMAGE_SIZE = 1, 2, 32

# Run by `run_without_the_package`, where Hub users are. Loads every folder of the manifest
# and writes, per case, the loaded class and the largest difference from the expected output.
REMOTE_SCRIPT = r"""
import json, sys
from pathlib import Path

import numpy as np
import torch
import transformers

results = {}
for case in json.loads(Path(sys.argv[1]).read_text()):
    try:
        loaded = getattr(transformers, case["auto_class"]).from_pretrained(case["folder"], trust_remote_code=True)
        inputs = torch.load(case["inputs"])
        if case["auto_class"] == "AutoFeatureExtractor":
            actual = loaded(inputs["raw_audio"].numpy(), sampling_rate=16000, return_tensors="pt")[case["output"]]
        else:
            with torch.no_grad():
                actual = getattr(loaded.eval()(**inputs), case["output"])
        expected = torch.load(case["expected"])
        difference = (actual - expected).abs().max().item() if actual.shape == expected.shape else float("inf")
        results[case["name"]] = {"class": type(loaded).__module__ + "." + type(loaded).__name__, "difference": difference}
    except Exception as error:
        results[case["name"]] = {"error": f"{type(error).__name__}: {error}"}
    assert "avs_models" not in sys.modules
print(json.dumps(results))
"""


def audio_inputs(tester_class, seed=0, **sizes) -> tuple:
    """A tiny audio encoder config and one input per frame, `[BATCH, FRAMES, ...]`."""
    torch.manual_seed(seed)
    tester = tester_class(None, batch_size=BATCH * FRAMES)
    tester.__dict__.update(sizes)
    config, inputs = tester.prepare_config_and_inputs_for_common()
    (name, values), = inputs.items()
    return config, {name: values.reshape(BATCH, FRAMES, *values.shape[1:])}


def tiny_ast_config(num_labels: int) -> ASTConfig:
    return ASTConfig(
        hidden_size=12,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_length=16,
        num_mel_bins=16,
        patch_size=8,
        frequency_stride=8,
        time_stride=8,
        num_labels=num_labels,
    )


def audio_encoder_case(model_class, tester_class):
    config, inputs = audio_inputs(tester_class)
    return model_class(config), inputs


def pcmanet_case(with_vggish: bool):
    visual_inputs = clip_inputs(batch=BATCH, frames=FRAMES, height=IMAGE_SIZE, width=IMAGE_SIZE)
    if not with_vggish:
        return PCMANetForAudioVisualSegmentation(tiny_pcmanet_config()), visual_inputs
    pixel_values = visual_inputs["pixel_values"]
    # PCMANet takes VGGish's own example size (96 frames x 64 bands), through tiny layers.
    vggish_config, audio = audio_inputs(VGGishModelTester, num_frames=96, num_mel_bins=64)
    config = tiny_pcmanet_config(audio_config=vggish_config, audio_embed_dim=vggish_config.embedding_size)
    return PCMANetForAudioVisualSegmentation(config), {"pixel_values": pixel_values, **audio}


def c3n_case(audio: str):
    pixel_values = clip_inputs(batch=BATCH, frames=FRAMES, height=IMAGE_SIZE, width=IMAGE_SIZE)["pixel_values"]
    if audio == "ast":
        audio_config = tiny_ast_config(num_labels=5)
        audio_inputs_ = {"input_values": torch.randn(BATCH, FRAMES, 16, 16)}
        embed_dim = audio_config.hidden_size
    else:
        tester = {"vggish": VGGishModelTester, "panns": PannsModelTester, "beats": BeatsModelTester}[audio]
        audio_config, audio_inputs_ = audio_inputs(tester)
        embed_dim = getattr(audio_config, "embedding_size", None) or audio_config.hidden_size
    config = tiny_c3n_config(
        audio_config=audio_config, num_audio_classes=audio_config.num_labels, audio_embed_dim=embed_dim
    )
    model = C3NForAudioVisualSegmentation(config)
    model.set_label_similarity(torch.rand(config.num_visual_classes, config.num_audio_classes))
    return model, {"pixel_values": pixel_values, **audio_inputs_}


def vggish_features(audio_config) -> dict:
    shape = (BATCH, FRAMES, 1, audio_config.num_frames, audio_config.num_mel_bins)
    return {"input_features": torch.randn(*shape)}


def avsegformer_case(with_vggish: bool):
    config = tiny_avsegformer_config(with_audio_encoder=with_vggish)
    inputs = clip_inputs(batch=BATCH, frames=FRAMES, height=IMAGE_SIZE, width=IMAGE_SIZE)
    if with_vggish:
        inputs = {"pixel_values": inputs["pixel_values"], **vggish_features(config.audio_config)}
    return AVSegFormerForAudioVisualSegmentation(config), inputs


def tpavi_case(with_vggish: bool):
    # TPAVI attends across groups of 5 frames, as the official model.
    inputs = clip_inputs(batch=BATCH, frames=5, height=IMAGE_SIZE, width=IMAGE_SIZE)
    if not with_vggish:
        return tiny_tpavi(), inputs
    model = tiny_tpavi(audio_config=TINY_VGGISH)
    features = torch.randn(BATCH, 5, 1, model.config.audio_config.num_frames, model.config.audio_config.num_mel_bins)
    return model, {"pixel_values": inputs["pixel_values"], "input_features": features}


# name -> (build the model and its inputs, the Auto class that loads the folder, the output compared)
MODEL_CASES = {
    "vggish": (lambda: audio_encoder_case(VGGishModel, VGGishModelTester), "AutoModel", "embeddings"),
    "vggish-classifier": (
        lambda: audio_encoder_case(VGGishForAudioClassification, VGGishModelTester),
        "AutoModelForAudioClassification",
        "logits",
    ),
    "vggish-classifier-as-encoder": (
        lambda: audio_encoder_case(VGGishForAudioClassification, VGGishModelTester),
        "AutoModel",
        "embeddings",
    ),
    "panns": (lambda: audio_encoder_case(PannsModel, PannsModelTester), "AutoModel", "embeddings"),
    "panns-classifier": (
        lambda: audio_encoder_case(PannsForAudioClassification, PannsModelTester),
        "AutoModelForAudioClassification",
        "logits",
    ),
    "beats": (lambda: audio_encoder_case(BeatsModel, BeatsModelTester), "AutoModel", "last_hidden_state"),
    "beats-classifier": (
        lambda: audio_encoder_case(BeatsForAudioClassification, BeatsModelTester),
        "AutoModelForAudioClassification",
        "logits",
    ),
    "pcmanet": (lambda: pcmanet_case(with_vggish=False), "AutoModel", "logits"),
    "pcmanet+vggish": (lambda: pcmanet_case(with_vggish=True), "AutoModel", "logits"),
    "c3n+vggish": (lambda: c3n_case("vggish"), "AutoModel", "logits"),
    "c3n+panns": (lambda: c3n_case("panns"), "AutoModel", "logits"),
    "c3n+beats": (lambda: c3n_case("beats"), "AutoModel", "logits"),
    "c3n+ast": (lambda: c3n_case("ast"), "AutoModel", "logits"),
    "tpavi": (lambda: tpavi_case(with_vggish=False), "AutoModel", "logits"),
    "tpavi+vggish": (lambda: tpavi_case(with_vggish=True), "AutoModel", "logits"),
    "avsegformer": (lambda: avsegformer_case(with_vggish=False), "AutoModel", "logits"),
    "avsegformer+vggish": (lambda: avsegformer_case(with_vggish=True), "AutoModel", "logits"),
}
FEATURE_EXTRACTOR_CASES = {
    "vggish-feature-extractor": (VGGishFeatureExtractor, "input_features"),
    "panns-feature-extractor": (PannsFeatureExtractor, "input_values"),
    "beats-feature-extractor": (BeatsFeatureExtractor, "input_values"),
}


def expected_output(model, inputs: dict, auto_class: str, output: str) -> torch.Tensor:
    """What the folder must give: the model's own output, or its base model's for `AutoModel`
    on a classifier folder (Transformers loads the base model's weights from it)."""
    if auto_class == "AutoModel" and isinstance(model.base_model, PreTrainedModel):
        model = model.base_model
    with torch.no_grad():
        return getattr(model.eval()(**inputs), output)


@pytest.fixture(scope="module")
def remote_results(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hub")
    manifest = []
    for name, (build, auto_class, output) in MODEL_CASES.items():
        folder = root / name
        torch.manual_seed(0)
        model, inputs = build()
        model.eval().save_pretrained(folder)
        torch.save(inputs, folder / "inputs.pt")
        torch.save(expected_output(model, inputs, auto_class, output), folder / "expected.pt")
        manifest.append({"name": name, "folder": str(folder), "auto_class": auto_class, "output": output})
    waveform = torch.from_numpy(np.sin(np.arange(3 * 16000) * 0.05))
    for name, (feature_extractor_class, output) in FEATURE_EXTRACTOR_CASES.items():
        folder = root / name
        feature_extractor = feature_extractor_class()
        feature_extractor.save_pretrained(folder)
        torch.save({"raw_audio": waveform}, folder / "inputs.pt")
        expected = feature_extractor(waveform.numpy(), sampling_rate=16000, return_tensors="pt")[output]
        torch.save(expected, folder / "expected.pt")
        manifest.append(
            {"name": name, "folder": str(folder), "auto_class": "AutoFeatureExtractor", "output": output}
        )
    for case in manifest:
        case.update(inputs=str(Path(case["folder"]) / "inputs.pt"), expected=str(Path(case["folder"]) / "expected.pt"))
    (root / "manifest.json").write_text(json.dumps(manifest))
    output = run_without_the_package(REMOTE_SCRIPT, str(root / "manifest.json"), root)
    return json.loads(output.strip().splitlines()[-1])


@pytest.mark.parametrize("name", [*MODEL_CASES, *FEATURE_EXTRACTOR_CASES])
def test_folder_loads_without_the_package_and_gives_the_same_outputs(remote_results, name):
    result = remote_results[name]
    assert "error" not in result, result.get("error")
    assert result["class"].startswith("transformers_modules."), result["class"]
    assert result["difference"] == 0.0, result


# ---------------------------------------------------------------- safe loading


def saved_vggish(folder: Path, **save_kwargs) -> Path:
    model, _ = audio_encoder_case(VGGishForAudioClassification, VGGishModelTester)
    model.save_pretrained(folder, **save_kwargs)
    return folder


def safetensors_layout(path: Path) -> tuple[int, dict]:
    """Start of the data section and the header (name -> dtype, shape, data_offsets) of a safetensors file."""
    raw = path.read_bytes()
    header_size = int.from_bytes(raw[:8], "little")
    return 8 + header_size, json.loads(raw[8 : 8 + header_size])


@pytest.mark.parametrize("auto", [False, True], ids=["class", "AutoModel"])
def test_truncated_weights_name_the_file(tmp_path, auto):
    from transformers import AutoModel

    folder = saved_vggish(tmp_path / "model")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    loader = AutoModel if auto else VGGishForAudioClassification
    with pytest.raises(OSError, match=f"cannot read the weights file {re.escape(str(weights))}.*truncated or corrupted"):
        loader.from_pretrained(folder)


def test_truncated_shard_is_named(tmp_path):
    folder = saved_vggish(tmp_path / "model", max_shard_size="20KB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and (folder / "model.safetensors.index.json").is_file()
    shards[-1].write_bytes(shards[-1].read_bytes()[:100])
    with pytest.raises(OSError, match=f"cannot read the weights file {re.escape(str(shards[-1]))}"):
        VGGishForAudioClassification.from_pretrained(folder)


def test_corrupted_weight_bytes_are_refused_naming_file_and_tensor(tmp_path):
    folder = saved_vggish(tmp_path / "model")
    weights = folder / "model.safetensors"
    data_start, header = safetensors_layout(weights)
    name = "head.classifier.weight"
    begin, end = header[name]["data_offsets"]
    raw = bytearray(weights.read_bytes())
    raw[data_start + begin : data_start + begin + 8] = b"\xff" * 8  # two float32 NaNs
    weights.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=f"{re.escape(str(weights))} is corrupted: tensor '{name}' holds 2 NaN or infinite"):
        VGGishForAudioClassification.from_pretrained(folder)
    # Intact files still load, and the check does not stop `state_dict=` loading.
    assert VGGishForAudioClassification.from_pretrained(saved_vggish(tmp_path / "intact")) is not None


# ---------------------------------------------------------------- the flat copy itself


def test_flat_copy_rewrites_imports_and_refuses_what_cannot_be_flat(tmp_path, monkeypatch):
    from avs_models.models.hub_code import hub_code_modules

    package = tmp_path / "package_for_hub_code"
    for folder in ("sub", "other"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "sub" / "leaf.py").write_text("VALUE = 1\n")
    (package / "other" / "leaf.py").write_text("OTHER = 2\n")
    (package / "top.py").write_text(
        "import torch\nfrom .sub.leaf import VALUE\n\n\ndef value():\n    from .sub.leaf import VALUE as LATE\n    return LATE\n"
    )
    (package / "from_package.py").write_text("from .sub import leaf\n")
    (package / "bare_dots.py").write_text("from . import top\n")
    (package / "clash.py").write_text("from .sub.leaf import VALUE\nfrom .other.leaf import OTHER\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    files = hub_code_modules(["package_for_hub_code.top"])
    assert set(files) == {"top.py", "leaf.py"}
    assert files["top.py"] == (
        "import torch\nfrom .leaf import VALUE\n\n\ndef value():\n    from .leaf import VALUE as LATE\n    return LATE\n"
    )
    with pytest.raises(ValueError, match="imports from the package package_for_hub_code.sub"):
        hub_code_modules(["package_for_hub_code.from_package"])
    with pytest.raises(ValueError, match="cannot be shared as Hub code"):
        hub_code_modules(["package_for_hub_code.bare_dots"])
    with pytest.raises(ValueError, match="would both be shared as leaf.py"):
        hub_code_modules(["package_for_hub_code.clash"])
