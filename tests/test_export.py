"""`avs-models export`: torch.export programs and ONNX files of saved models, checked against eager."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from test_c3n import tiny_config as tiny_c3n_config
from test_pcmanet import tiny_model as tiny_pcmanet

from avs_models import C3NForAudioVisualSegmentation, VGGishConfig, VGGishModel
from avs_models.cli import main
from avs_models.commands.export import example_inputs

# Tiny layers over VGGish's own example size (96 frames x 64 bands), the input the command makes.
TINY_VGGISH = {"stage_channels": [[4], [8]], "hidden_sizes": [32], "embedding_size": 16}


@pytest.fixture(scope="module")
def vggish_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("vggish")
    VGGishModel(VGGishConfig(**TINY_VGGISH)).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pcmanet_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pcmanet")
    tiny_pcmanet().save_pretrained(folder)
    return folder


def reported_differences(stdout: str) -> list[float]:
    return [float(value) for value in re.findall(r"batch \d+: ([0-9.e+-]+)", stdout)]


def test_torch_export_of_vggish_with_a_dynamic_batch(vggish_dir, tmp_path, capsys):
    out = tmp_path / "vggish.pt2"
    assert main(["export", str(vggish_dir), "--out", str(out), "--batch-size", "2", "--dynamic-batch"]) == 0
    stdout = capsys.readouterr().out
    assert f"exported VGGishModel to {out} (torch-export" in stdout
    assert reported_differences(stdout) == [0.0, 0.0]  # batch 2 (traced) and batch 3

    eager = VGGishModel.from_pretrained(vggish_dir).eval()
    program = torch.export.load(out).module()
    for batch in (1, 4):
        features = torch.randn(batch, 1, 96, 64)
        with torch.no_grad():
            torch.testing.assert_close(program(input_features=features).embeddings, eager(features).embeddings)


def test_onnx_export_of_vggish_runs_in_onnxruntime(vggish_dir, tmp_path, capsys):
    onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / "vggish.onnx"
    assert main(["export", str(vggish_dir), "--format", "onnx", "--out", str(out)]) == 0
    assert max(reported_differences(capsys.readouterr().out)) < 1e-5

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    features = np.random.default_rng(0).standard_normal((1, 1, 96, 64)).astype(np.float32)
    (embeddings,) = session.run(None, {"input_features": features})
    with torch.no_grad():
        expected = VGGishModel.from_pretrained(vggish_dir).eval()(torch.from_numpy(features)).embeddings
    np.testing.assert_allclose(embeddings, expected.numpy(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("export_format", ["torch-export", "onnx"])
def test_pcmanet_exports_with_a_dynamic_batch(pcmanet_dir, tmp_path, capsys, export_format):
    suffix = ".pt2" if export_format == "torch-export" else ".onnx"
    out = tmp_path / f"pcmanet{suffix}"
    argv = ["export", str(pcmanet_dir), "--format", export_format, "--out", str(out)]
    assert main([*argv, "--frames", "2", "--image-size", "64", "--dynamic-batch"]) == 0
    differences = reported_differences(capsys.readouterr().out)
    assert len(differences) == 2 and max(differences) < 1e-4


def test_sample_inputs_follow_the_model(pcmanet_dir):
    model = tiny_pcmanet()
    inputs = example_inputs(model, batch_size=2, num_frames=3, height=48, width=64)
    assert {name: tuple(value.shape) for name, value in inputs.items()} == {
        "pixel_values": (2, 3, 3, 48, 64),
        "audio_embeds": (2, 3, model.config.audio_embed_dim),
    }
    audio_config = VGGishConfig(**TINY_VGGISH, num_labels=7)
    c3n = C3NForAudioVisualSegmentation(tiny_c3n_config(audio_config=audio_config, audio_embed_dim=16))
    inputs = example_inputs(c3n, batch_size=1, num_frames=2, height=32, width=32)
    assert {name: tuple(value.shape) for name, value in inputs.items()} == {
        "pixel_values": (1, 2, 3, 32, 32),
        "input_features": (1, 2, 1, 96, 64),
    }


def test_c3n_with_ccam_gives_one_line_saying_why(tmp_path, capsys):
    folder = tmp_path / "c3n"
    C3NForAudioVisualSegmentation(tiny_c3n_config()).save_pretrained(folder)
    capsys.readouterr()
    code = main(["export", str(folder), "--out", str(tmp_path / "c3n.pt2"), "--frames", "1", "--image-size", "32"])
    err = capsys.readouterr().err
    # The error is the last line, after the bar of loading the weights.
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("avs-models export: error: cannot export C3NForAudioVisualSegmentation")
    assert "CCAM" in err.splitlines()[-1]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--format", "onnx"], "must end in .onnx"),
        (["--image-size", "32", "32", "32"], "--image-size takes one or two values"),
    ],
)
def test_option_errors_are_one_line(vggish_dir, tmp_path, capsys, extra, fragment):
    assert main(["export", str(vggish_dir), "--out", str(tmp_path / "model.pt2"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err


def test_missing_model_folder_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "model.pt2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing" in err
