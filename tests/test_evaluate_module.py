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


def test_evaluate_module_refuses_255_references_unless_asked():
    # The case: predictions 5.0 and references 255 gave an F-score of 4.28.
    module = evaluate.load(MODULE, "s4")
    predictions, references = torch.full((2, 3, 4, 4), 5.0), torch.full((2, 3, 4, 4), 255.0)
    with pytest.raises(ValueError, match="found values 255 .*mask_values='0/255'"):
        module.compute(predictions=predictions.numpy(), references=references.numpy())
    result = module.compute(
        predictions=predictions.numpy(), references=references.numpy(), mask_values="0/255"
    )
    assert result["miou"] == pytest.approx(1.0) and result["fscore"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="probabilities in"):
        module.compute(
            predictions=predictions.numpy(),
            references=(references / 255).numpy(),
            prediction_type="probabilities",
        )


def test_evaluate_module_batches_the_fscore_like_the_library():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(5, 2, 6, 6, generator=generator) * 3
    labels = (torch.rand(5, 2, 6, 6, generator=generator) > 0.5).float()
    library = BinaryMaskMetric(fscore_batch_videos=2)
    library.update(logits, labels)
    result = evaluate.load(MODULE, "ms3").compute(
        predictions=logits.numpy(), references=labels.numpy(), fscore_batch_videos=2
    )
    assert result["fscore_batch_videos"] == 2
    assert result["fscore"] == pytest.approx(library.compute()["fscore"], abs=1e-9)
    assert result["fscore"] != pytest.approx(BinaryMaskMetric()._summarise(library.records)["fscore"])


def test_evaluate_module_avss_ignores_255_and_refuses_unknown_ids():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 2, 5, 6, 6, generator=generator)
    labels = torch.randint(0, 5, (2, 2, 6, 6), generator=generator)
    labels[0, 0, :3] = 255
    library = SemanticSegmentationMetric(num_classes=5)
    library.update(logits, labels)
    module = evaluate.load(MODULE, "avss")
    result = module.compute(predictions=logits.numpy(), references=labels.float().numpy(), num_classes=5)
    assert result["miou"] == pytest.approx(library.compute()["miou"], abs=1e-9)
    labels[1, 1, 0, 0] = 80
    with pytest.raises(ValueError, match=r"class ids in \[0, 5\) or the ignore index 255; found 80"):
        module.compute(predictions=logits.numpy(), references=labels.float().numpy(), num_classes=5)
