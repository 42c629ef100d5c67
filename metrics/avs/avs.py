"""Audio-visual segmentation mIoU and F-score as a Hugging Face `evaluate` metric.

Load it with `evaluate.load("path/to/metrics/avs", "s4")` (configs: "s4", "ms3", "avss"). All
computation and every input check is delegated to `avs_models.metrics`, so the numbers and the
errors are the library's.
"""

# evaluate's loader reads this file's import lines one by one, so each import has its own line.
# ruff: noqa: I001
import datasets
import evaluate
import numpy as np
import torch

from avs_models.metrics import BinaryMaskMetric
from avs_models.metrics import SemanticSegmentationMetric

_DESCRIPTION = """
mIoU and F-score (beta^2 = 0.3) for AVSBench. For "s4"/"ms3" each prediction is one video's mask
logits [T, H, W] (or probabilities with prediction_type="probabilities") and each reference its
ground truth [T, H, W] in {0, 1} (0/255 with mask_values="0/255"); `definition` is "official"
(the official test scripts, F-score maximised per test batch of `fscore_batch_videos` videos) or
"per_frame". For "avss" each prediction is [T, C, H, W] class logits, each reference [T, H, W]
class ids in [0, num_classes) or `ignore_index` (255, left out of every count); `definition` is
"official" (AVSBench colour metrics) or "dataset"; `num_classes` defaults to 71. References
outside these values are refused with a ValueError naming the values found.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per video, mask logits [T, H, W] ("s4", "ms3") or class logits [T, C, H, W] ("avss").
    references: per video, ground truth [T, H, W].
    definition: see the description; the result's "definition" names the one used.
    fscore_batch_videos: "s4"/"ms3", videos per official test batch, in the order given (1).
    prediction_type: "s4"/"ms3", "logits" (default) or "probabilities" in [0, 1].
    mask_values: "s4"/"ms3", "0/1" (default) or "0/255".
    num_classes: "avss" only, number of classes (71).
    ignore_index: "avss" only, label of pixels to leave out (255; None for none).
Returns:
    dict with "miou", "fscore", "definition" (and "fscore_batch_videos") and frame counts.
"""


def _nested(depth):
    feature = datasets.Value("float32")
    for _ in range(depth):
        feature = datasets.Sequence(feature)
    return feature


class AVS(evaluate.Metric):
    def _info(self):
        if self.config_name not in ("default", "s4", "ms3", "avss"):
            raise KeyError(f"config must be one of 's4', 'ms3', 'avss', got {self.config_name!r}")
        prediction_depth = 4 if self.config_name == "avss" else 3
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": _nested(prediction_depth), "references": _nested(3)}),
        )

    def _compute(
        self,
        predictions,
        references,
        definition="official",
        fscore_batch_videos=1,
        prediction_type="logits",
        mask_values="0/1",
        num_classes=71,
        ignore_index=255,
    ):
        if self.config_name == "avss":
            metric = SemanticSegmentationMetric(
                num_classes=num_classes, definition=definition, ignore_index=ignore_index
            )
        else:
            metric = BinaryMaskMetric(
                definition,
                fscore_batch_videos=fscore_batch_videos,
                prediction_type=prediction_type,
                mask_values=mask_values,
            )
        for logits, labels in zip(predictions, references):
            metric.update(
                torch.as_tensor(np.asarray(logits))[None], torch.as_tensor(np.asarray(labels))[None]
            )
        return metric.compute()
