"""Model cards: every converted, trained or evaluated folder gets a `README.md` that the Hub's own
library reads back (metadata, `model-index`), that names where the weights come from, and whose
loading snippets run on the folder, with the package and where it is not installed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, ModelCardData, metadata_load
from media import write_video
from test_hub_loading import REMOTE_SCRIPT
from test_panns import TINY as TINY_PANNS
from test_panns import official_state_dict as official_panns_state_dict
from test_pipeline_predict import save_tiny_c3n, save_tiny_pcmanet

from avs_models import PCMANetConfig, PCMANetForAudioVisualSegmentation
from avs_models.cli import main as cli_main
from avs_models.data import make_synthetic_avsbench
from avs_models.families import model_families
from avs_models.hub import CARD_NAME, record_evaluation, write_model_card
from avs_models.models.panns.convert_panns_original_to_hf import main as convert_panns
from avs_models.models.vggish import VGGishFeatureExtractor

# The start of the hub-loading test's subprocess script: a Python in which `import avs_models` fails.
BLOCK_PACKAGE = REMOTE_SCRIPT[: REMOTE_SCRIPT.index("import numpy")]
IMAGE_SIZE = 32


def python_blocks(card_text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card_text, flags=re.DOTALL)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """One folder of each kind a card describes differently."""
    root = tmp_path_factory.mktemp("cards")
    save_tiny_pcmanet(root / "pcmanet-vggish")  # audio encoder and processor: the pipeline works
    torch.manual_seed(0)
    config = PCMANetConfig(**_tiny_pcmanet_without_audio())
    PCMANetForAudioVisualSegmentation(config).save_pretrained(root / "pcmanet-embeddings")  # no processor
    save_tiny_c3n(root / "c3n-embeddings", None, VGGishFeatureExtractor())  # audio_embeds + audio_logits
    torch.save({"model": official_panns_state_dict(TINY_PANNS)}, root / "Cnn14_tiny.pth")
    convert_panns(["--checkpoint", str(root / "Cnn14_tiny.pth"), "--output-dir", str(root / "panns")])
    for name in ("pcmanet-vggish", "pcmanet-embeddings", "c3n-embeddings"):
        write_model_card(root / name)
    return {name: root / name for name in ("pcmanet-vggish", "pcmanet-embeddings", "c3n-embeddings", "panns")}


def _tiny_pcmanet_without_audio() -> dict:
    from tiny_training import TINY_MODEL

    return {key: value for key, value in TINY_MODEL["config"].items() if key != "audio_config"}


def test_every_card_passes_the_hubs_metadata_checks(folders):
    for name, folder in folders.items():
        card = ModelCard.load(folder / CARD_NAME)
        metadata = metadata_load(folder / CARD_NAME)
        # huggingface_hub's own parsing of the metadata block (raises on a malformed model-index).
        assert ModelCardData(**metadata).to_dict() == card.data.to_dict(), name
        assert card.data.library_name == "transformers"
        assert "audio-visual-segmentation" in card.data.tags and "custom_code" in card.data.tags
        assert card.data.license, name
        if name == "panns":
            assert card.data.pipeline_tag == "audio-classification" and card.data.license == "mit"
        else:
            assert card.data.pipeline_tag == "image-segmentation"


def test_card_and_push_functions_are_the_packages_public_api(folders):
    import avs_models

    assert {"write_model_card", "render_model_card", "record_evaluation", "push_folder"} <= set(avs_models.__all__)
    for folder in folders.values():
        rendered = avs_models.render_model_card(folder)
        assert rendered.data.to_dict() == ModelCard.load(folder / CARD_NAME).data.to_dict()


def test_converted_card_names_paper_code_command_parity_and_license(folders):
    text = (folders["panns"] / CARD_NAME).read_text()
    facts = model_families()["panns_cnn14"]
    assert facts["paper"]["title"] in text and facts["paper"]["url"] in text
    assert facts["official_repository"] in text and facts["parity"] in text
    # The converter's command as given, with file names only: no folder of this machine.
    assert (
        "python -m avs_models.models.panns.convert_panns_original_to_hf --checkpoint Cnn14_tiny.pth "
        "--output-dir panns"
    ) in text
    assert str(folders["panns"].parent) not in text
    assert "## Inputs" in text and "## Limits" in text and "@article{kong2020panns" in text
    # A folder saved from Python records no conversion, so it claims neither the parity nor the license.
    saved = (folders["pcmanet-embeddings"] / CARD_NAME).read_text()
    assert "Parity" not in saved and "no conversion or training run is recorded" in saved
    assert ModelCard.load(folders["pcmanet-embeddings"] / CARD_NAME).data.license == "other"


def test_evaluate_puts_its_results_in_the_model_index(folders, tmp_path, capsys):
    data = tmp_path / "data"
    make_synthetic_avsbench(data, "s4", 6, seed=0, image_size=IMAGE_SIZE)
    model = folders["pcmanet-vggish"]
    arguments = ["evaluate", str(model), str(data), "--subset", "s4", "--image-size", "32"]
    for definition in ("official", "per_frame", "official"):  # the second official run replaces the first
        json_path = tmp_path / f"{definition}.json"
        assert cli_main([*arguments, "--definition", definition, "--json", str(json_path)]) == 0
        assert f"model card updated: {model / CARD_NAME}" in capsys.readouterr().out
    results = json.loads((tmp_path / "official.json").read_text())["clean"]

    card = ModelCard.load(model / CARD_NAME)
    assert card.data.datasets == ["synthetic-avsbench"] and "avsbench-s4" in card.data.tags
    by_definition = {(r.metric_config, r.metric_type): r for r in card.data.eval_results}
    assert sorted(by_definition) == [
        ("official", "f_score"),
        ("official", "mean_iou"),
        ("per_frame", "f_score"),
        ("per_frame", "mean_iou"),
    ]
    official = by_definition[("official", "mean_iou")]
    assert official.metric_value == pytest.approx(results["miou"], abs=1e-6)
    assert by_definition[("official", "f_score")].metric_value == pytest.approx(results["fscore"], abs=1e-6)
    assert official.metric_args == {"fscore_batch_videos": 1}  # PCMANet's official test batch
    assert (official.dataset_config, official.dataset_split, official.task_type) == (
        "s4",
        "test",
        "image-segmentation",
    )
    assert by_definition[("per_frame", "mean_iou")].metric_args is None
    # The model-index round-trips: written again from what was read, it is the same.
    assert ModelCard(str(card)).data.to_dict() == card.data.to_dict()
    assert "F-score maximised over thresholds per test batch of 1 video" in card.text


def test_recording_the_same_evaluation_again_replaces_it(folders, tmp_path):
    folder = tmp_path / "model"
    save_tiny_pcmanet(folder)
    result = {"subset": "ms3", "split": "test", "miou": 0.5, "fscore": 0.6, "definition": "official"}
    record_evaluation(folder, {**result, "fscore_batch_videos": 1}, "AVSBench")
    record_evaluation(folder, {**result, "miou": 0.7, "fscore_batch_videos": 1}, "AVSBench")
    record_evaluation(folder, {**result, "fscore_batch_videos": 4}, "AVSBench")
    values = [
        (r.metric_args["fscore_batch_videos"], r.metric_value)
        for r in ModelCard.load(folder / CARD_NAME).data.eval_results
    ]
    assert values == [(1, 0.7), (1, 0.6), (4, 0.5), (4, 0.6)]
    assert ModelCard.load(folder / CARD_NAME).data.datasets == ["avsbench"]


def run_snippets(snippets: list[str], cwd: Path, prelude: str = "") -> list[str]:
    """Run each snippet in a fresh namespace of one new Python; the lines each one printed."""
    script = prelude + "\n".join(
        [
            "import contextlib, io, json, sys",
            "printed = []",
            f"for snippet in {snippets!r}:",
            "    output = io.StringIO()",
            "    with contextlib.redirect_stdout(output):",
            "        exec(compile(snippet, 'snippet', 'exec'), {'__name__': '__main__'})",
            "    printed.append(output.getvalue().strip())",
            "print(json.dumps(printed))",
        ]
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_loading_snippets_run_with_and_without_the_package(folders, tmp_path):
    write_video(tmp_path / "clip.mp4", 3, fps=2, size=(36, 44))  # the snippets' "your video"
    with_package, without_package = [], []
    for folder in folders.values():
        card = str(ModelCard.load(write_model_card(folder, repo_id=str(folder))))
        first, second = python_blocks(card)
        assert "import avs_models" in first and "import avs_models" not in second
        assert "trust_remote_code=True" in second
        with_package.append(first)
        without_package.append(second)

    printed = run_snippets(with_package, tmp_path)
    assert printed[0] == "3 (36, 44)"  # the pipeline: 3 seconds, masks at the video's size
    # Clip length and frame size from the saved processor, else 5 frames of 224x224.
    assert printed[1:3] == ["torch.Size([1, 5, 1, 224, 224])", "torch.Size([1, 2, 1, 32, 32])"]
    assert printed[3].startswith("torch.Size([2, ")  # PANNs: one output row per second of sound
    remote = run_snippets(without_package, tmp_path, prelude=BLOCK_PACKAGE)
    assert remote[0] == "torch.Size([1, 2, 1, 32, 32])" and remote[1:] == printed[1:]
