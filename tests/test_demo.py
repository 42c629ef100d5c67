"""`avs-models demo`: a reduced run through the real training loop, and the full run (slow)."""

import json

import pytest
from PIL import Image

from avs_models.cli import main
from avs_models.demo import run_demo


def test_reduced_demo_writes_metrics_and_overlays(tmp_path, capsys):
    argv = ["demo", "--output", str(tmp_path), "--num-videos", "10", "--epochs", "1", "--image-size", "32"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "own audio" in printed and "swapped audio" in printed
    summary = json.loads((tmp_path / "demo_results.json").read_text())
    for setting in ("own audio", "swapped audio"):
        assert 0.0 <= summary[setting]["miou"] <= 1.0 and 0.0 <= summary[setting]["fscore"] <= 1.0
        assert summary[setting]["num_videos"] == 2
    assert summary["definition"] == "official"
    for path in summary["overlays"]:
        with Image.open(path) as image:
            # The five frames of an MS3 clip side by side, enlarged to 160 px, under a caption.
            assert image.width == 5 * 160 + 4 * 4 and image.height > 160
    with Image.open(tmp_path / "overlay_example.png") as figure:
        assert figure.width == 5 * 160 + 4 * 4 and figure.height > 4 * 160
    assert (tmp_path / "training" / "best" / "model.safetensors").is_file()


def test_demo_errors(tmp_path):
    with pytest.raises(ValueError, match="num_videos"):
        run_demo(tmp_path, num_videos=6)
    with pytest.raises(ValueError, match="s4 or ms3"):
        run_demo(tmp_path, subset="avss")


@pytest.mark.slow
def test_full_demo_mask_follows_the_sound(tmp_path):
    summary = run_demo(tmp_path)
    assert summary["own audio"]["miou"] > summary["swapped audio"]["miou"] + 0.05
