"""The repository's `evaluate` module gives the library's numbers."""

from pathlib import Path

import evaluate
import pytest
import torch

from avs_models.metrics import BinaryMaskMetric, SemanticSegmentationMetric

MODULE = str(Path(__file__).resolve().parents[1] / "metrics" / "avs")


@pytest.mark.parametrize("definition", ["official", "per_frame"])
def test_evaluate_load_binary_matches_library(definition):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 8, 8, generator=generator)
    labels = (torch.rand(3, 2, 8, 8, generator=generator) > 0.6).float()
    labels[1, 0] = 0  # a black frame
    library = BinaryMaskMetric(definition)
    library.update(logits, labels)
    module = evaluate.load(MODULE, "s4")
    result = module.compute(predictions=logits.numpy(), references=labels.numpy(), definition=definition)
    expected = library.compute()
    assert result["definition"] == definition
    assert result["miou"] == pytest.approx(expected["miou"], abs=1e-9)
    assert result["fscore"] == pytest.approx(expected["fscore"], abs=1e-9)


def test_evaluate_load_avss_matches_library():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 2, 5, 6, 6, generator=generator)
    labels = torch.randint(0, 5, (2, 2, 6, 6), generator=generator)
    library = SemanticSegmentationMetric(num_classes=5)
    library.update(logits, labels)
    module = evaluate.load(MODULE, "avss")
    module.add_batch(predictions=logits.numpy(), references=labels.float().numpy())
    result = module.compute(num_classes=5)
    assert result["miou"] == pytest.approx(library.compute()["miou"], abs=1e-9)
    assert result["fscore"] == pytest.approx(library.compute()["fscore"], abs=1e-9)
