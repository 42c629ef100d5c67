"""Audio-visual segmentation mIoU and F-score as a Hugging Face `evaluate` metric.

Load it with `evaluate.load("path/to/metrics/avs", "s4")` (configs: "s4", "ms3", "avss"). All
computation is delegated to `avs_models.metrics`, so the numbers are the library's.
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
logits [T, H, W] and each reference its binary ground truth [T, H, W]; `definition` is
"official" (the AVSBench scripts' per-video averaging) or "per_frame". For "avss" each prediction
is [T, C, H, W] class logits, each reference [T, H, W] class ids; `definition` is "official"
(AVSBench colour metrics) or "dataset"; `num_classes` defaults to 71.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per video, mask logits [T, H, W] ("s4", "ms3") or class logits [T, C, H, W] ("avss").
    references: per video, ground truth [T, H, W].
    definition: see the description; the result's "definition" names the one used.
    num_classes: AVSS only, number of classes (71).
Returns:
    dict with "miou", "fscore", "definition" and frame counts.
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

    def _compute(self, predictions, references, definition="official", num_classes=71):
        if self.config_name == "avss":
            metric = SemanticSegmentationMetric(num_classes=num_classes, definition=definition)
            for logits, labels in zip(predictions, references):
                metric.update(
                    torch.as_tensor(np.asarray(logits))[None],
                    torch.as_tensor(np.asarray(labels)).long()[None],
                )
            result = metric.compute()
        else:
            metric = BinaryMaskMetric(definition)
            for logits, labels in zip(predictions, references):
                metric.update(
                    torch.as_tensor(np.asarray(logits))[None], torch.as_tensor(np.asarray(labels))[None]
                )
            result = metric.compute()
        return result
