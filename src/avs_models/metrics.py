"""Streaming mIoU and F-score for audio-visual segmentation.

Two definitions are offered for S4/MS3 (binary masks), and every result names the one it used:

- `"official"` reproduces the evaluation scripts of AVSBench and the papers built on it. They
  score one test batch at a time: a frame's IoU thresholds `sigmoid(logit) > 0.5`; a frame whose
  ground truth is empty scores the fraction of pixels correctly left as background (not 0 or 1);
  `1e-7` is added to the union; a batch's IoU is the mean over its frames. The F-score
  (beta^2 = 0.3) builds a precision/recall curve at 255 thresholds of `linspace(0, 1 - 1e-10,
  255)` on the sigmoid, averages the per-frame F curves over the batch's frames whose ground
  truth is not all black, and takes the maximum over thresholds (a batch whose ground truths are
  all black scores 0). Both are averaged over batches. The maximum is taken per batch, so the
  F-score depends on how many videos a test batch holds: `fscore_batch_videos` (1 for the
  AVSBench `test.py` default, PCMANet and C3N; see `OFFICIAL_FSCORE_BATCH_VIDEOS`). The mIoU
  uses the same batches; it differs from the per-video mean only when batches differ in size.
- `"per_frame"`: plain Jaccard index per frame (empty ground truth scores 1 when the prediction
  is empty too, else 0), averaged over all frames; the F-score averages the per-frame F curves
  over all frames that are not all black and then takes the maximum over thresholds.

For AVSS (71 classes) `SemanticSegmentationMetric` reproduces the official colour metrics: for
each frame and class, IoU = intersection / (union + 2.22e-16) and the F-score from that frame's
precision and recall (0 where undefined); both are summed over frames and divided per class by
the number of frames in which the class occurs in prediction or ground truth; mIoU and F-score
are means over all classes (a class never seen counts as 0). Pixels labelled `ignore_index`
(255) count for neither prediction nor ground truth. Its `"dataset"` definition is the usual
dataset-wide mIoU: per-class intersection and union summed over frames, averaged over the
classes that occur.

Inputs: predictions are mask logits (`prediction_type="logits"`, the default: what the models
return; any real value, NaN refused) or foreground probabilities in [0, 1]
(`prediction_type="probabilities"`). Binary ground truths hold {0, 1} (or bool); masks saved as
0/255 images need `mask_values="0/255"`. AVSS ground truths hold class ids in
`[0, num_classes)` or `ignore_index`. Anything else is a `ValueError` naming the argument and
the values found (rules in `avs_models.models.labels`).

Metric objects are fed batch by batch with `update(...)` and read with `compute()`. Their
per-frame records are plain Python data, so several processes can gather them (e.g. with
`accelerate.utils.gather_object`) and `merge` them before computing.
"""

from __future__ import annotations

import itertools
import warnings
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch

from avs_models.families import model_families
from avs_models.models.labels import IGNORE_INDEX, MASK_VALUE_CONVENTIONS, check_binary_mask, check_class_map

BINARY_DEFINITIONS = ("official", "per_frame")
SEMANTIC_DEFINITIONS = ("official", "dataset")
PREDICTION_TYPES = ("logits", "probabilities")
F_BETA_SQUARED = 0.3
NUM_THRESHOLDS = 255
_IOU_EPS = 1e-7
_PR_EPS = 1e-20
_SEMANTIC_EPS = 2.220446049250313e-16

# Videos per test batch in each model family's official test script: its F-score (and mIoU) is
# averaged over batches of this many videos. The values and their sources (the official test
# scripts' batch sizes) are in the per-family data file, `families.json`. The AVSS colour metrics
# sum per frame, so no batch size enters them.
OFFICIAL_FSCORE_BATCH_VIDEOS = {
    model_type: facts["official_fscore_batch_videos"]
    for model_type, facts in model_families().items()
    if "official_fscore_batch_videos" in facts
}


def official_fscore_batch_videos(model_type: str) -> int:
    """Videos per test batch of `model_type`'s official test script (1 for families not listed)."""
    return OFFICIAL_FSCORE_BATCH_VIDEOS.get(model_type, 1)


def _frame_selection(labels: torch.Tensor, labeled_frames: torch.Tensor | None) -> torch.Tensor:
    if labeled_frames is None:
        return torch.ones(labels.shape[:2], dtype=torch.bool)
    if labeled_frames.shape != labels.shape[:2]:
        raise ValueError(
            f"labeled_frames must have shape [B, T] = {tuple(labels.shape[:2])}, got {tuple(labeled_frames.shape)}"
        )
    return labeled_frames.bool().cpu()


def _video_ids(video_ids: Sequence[Hashable] | None, batch_size: int, offset: int) -> list:
    if video_ids is None:
        return list(range(offset, offset + batch_size))
    if len(video_ids) != batch_size:
        raise ValueError(f"video_ids must have one entry per video ({batch_size}), got {len(video_ids)}")
    return list(video_ids)


def _categories(categories: Sequence[str] | None, batch_size: int) -> list:
    if categories is None:
        return [None] * batch_size
    if len(categories) != batch_size:
        raise ValueError(f"categories must have one entry per video ({batch_size}), got {len(categories)}")
    return list(categories)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _checked_predictions(name: str, predictions: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """Predictions as float32 on the CPU, refusing NaN and, for probabilities, values outside [0, 1]."""
    predictions = predictions.detach().float().cpu()
    if bool(torch.isnan(predictions).any()):
        raise ValueError(f"`{name}` holds NaN at {int(torch.isnan(predictions).sum())} pixel(s)")
    if prediction_type == "probabilities" and bool(((predictions < 0) | (predictions > 1)).any()):
        raise ValueError(
            f"`{name}` must hold probabilities in [0, 1] (prediction_type='probabilities'); found values "
            f"from {predictions.min().item():g} to {predictions.max().item():g}. "
            "Pass prediction_type='logits' for logits."
        )
    return predictions


def _frame_probabilities(frames: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """Foreground probabilities of checked `[N, H, W]` predictions."""
    if prediction_type == "probabilities":
        return frames
    # One sigmoid per frame: the vectorised and scalar paths of `sigmoid` can differ in the last
    # bit depending on a value's position in the tensor, and the F curve compares against fixed
    # thresholds; per frame, the numbers do not depend on how frames are batched.
    return torch.stack([torch.sigmoid(frame) for frame in frames])


def _looks_like_probabilities(logits: torch.Tensor) -> bool:
    # Logits of a real model are negative on the background; values all within [0, 1] with some
    # strictly inside are far more likely probabilities passed as logits.
    return bool(((logits >= 0) & (logits <= 1)).all()) and bool(((logits > 0) & (logits < 1)).any())


_THRESHOLDS = torch.linspace(0, 1 - 1e-10, NUM_THRESHOLDS)  # float32 as in the official scripts


def _binary_scores(probabilities: torch.Tensor, targets: torch.Tensor) -> list[dict]:
    """Scores of `N` frames: `probabilities` float32 `[N, H, W]`, `targets` float32 {0, 1} `[N, H, W]`.

    The F curve counts, per threshold, the pixels at or above it (and those among them in the
    ground truth). Each pixel's level (how many thresholds it reaches) comes from one sorted
    search; histograms of the levels, summed from the top, give every threshold's counts at once.
    The counts are whole numbers, so precision, recall and F are the float32 values of the
    official per-threshold loop, bit for bit (tests compare the two).
    """
    count = probabilities.shape[0]
    probabilities = probabilities.reshape(count, -1)
    targets = targets.reshape(count, -1)
    predicted = (probabilities > 0.5).float()
    intersection = (predicted * targets).sum(dim=1)
    union = torch.maximum(predicted, targets).sum(dim=1)
    positives = targets.sum(dim=1)
    background_kept = ((1 - targets) * (1 - predicted)).sum(dim=1) / (targets.shape[1] + _IOU_EPS)
    official_iou = torch.where(positives == 0, background_kept, intersection / (union + _IOU_EPS))

    levels = torch.searchsorted(_THRESHOLDS, probabilities, right=True)
    levels = levels + torch.arange(count)[:, None] * (NUM_THRESHOLDS + 1)
    bins = count * (NUM_THRESHOLDS + 1)
    per_level = torch.bincount(levels.flatten(), minlength=bins).view(count, -1)
    foreground = torch.bincount(levels[targets.bool()], minlength=bins).view(count, -1)
    # pixels at or above threshold k are those of level k + 1 or more
    above = per_level.flip(1).cumsum(1).flip(1)[:, 1:].float()
    true_positives = foreground.flip(1).cumsum(1).flip(1)[:, 1:].float()
    precision = true_positives / (above + _PR_EPS)
    recall = true_positives / (positives[:, None] + _PR_EPS)
    curves = (1 + F_BETA_SQUARED) * precision * recall / (F_BETA_SQUARED * precision + recall)
    curves = torch.nan_to_num(curves, nan=0.0)

    scores = []
    for frame in range(count):
        if positives[frame] == 0:
            jaccard = 1.0 if predicted[frame].sum() == 0 else 0.0
            f_curve = None
        else:
            jaccard = (intersection[frame] / union[frame]).item()
            f_curve = curves[frame].tolist()
        scores.append(
            {"official_iou": float(official_iou[frame]), "jaccard": float(jaccard), "f_curve": f_curve}
        )
    return scores


def binary_frame_scores(
    logits: torch.Tensor, target: torch.Tensor, *, prediction_type: str = "logits", mask_values: str = "0/1"
) -> dict:
    """Scores of one frame: `logits` (or probabilities, see `prediction_type`) and `target` are `[H, W]`.

    Returns the official IoU, the plain Jaccard IoU and the F curve over the 255 thresholds
    (`None` when the ground truth is all black, which F-scores skip).
    """
    _check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
    if logits.dim() != 2 or logits.shape != target.shape:
        raise ValueError(
            f"logits and target must both be [H, W], got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    target = check_binary_mask("target", target.detach().cpu(), mask_values).float()
    frames = _checked_predictions("logits", logits, prediction_type)[None]
    return _binary_scores(_frame_probabilities(frames, prediction_type), target[None])[0]


@dataclass
class BinaryMaskMetric:
    """Streaming mIoU and F-score for S4/MS3 binary masks.

    Args:
        definition: "official" (the official test scripts, per-batch averaging) or "per_frame".
        fscore_batch_videos: videos per official test batch (consecutive videos in the order they
            are fed); the official F-score is the maximum over thresholds of each batch,
            averaged over batches. 1 reproduces AVSBench's `test.py`, PCMANet and C3N.
        prediction_type: "logits" (what the models return) or "probabilities" in [0, 1].
        mask_values: "0/1" (labels in {0, 1} or bool) or "0/255" (saved mask images).
    """

    definition: str = "official"
    fscore_batch_videos: int = 1
    prediction_type: str = "logits"
    mask_values: str = "0/1"
    records: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_choice("definition", self.definition, BINARY_DEFINITIONS)
        _check_choice("prediction_type", self.prediction_type, PREDICTION_TYPES)
        _check_choice("mask_values", self.mask_values, MASK_VALUE_CONVENTIONS)
        if isinstance(self.fscore_batch_videos, bool) or not isinstance(self.fscore_batch_videos, int):
            raise TypeError(f"fscore_batch_videos must be an int, got {self.fscore_batch_videos!r}")
        if self.fscore_batch_videos < 1:
            raise ValueError(f"fscore_batch_videos must be at least 1, got {self.fscore_batch_videos}")
        self._warned_probabilities = False

    def reset(self) -> None:
        self.records = []

    def update(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        labeled_frames: torch.Tensor | None = None,
        video_ids: Sequence[Hashable] | None = None,
        categories: Sequence[str] | None = None,
    ) -> None:
        """Add a batch.

        Args:
            logits: `[B, T, H, W]` or `[B, T, 1, H, W]` mask logits (probabilities with
                `prediction_type="probabilities"`).
            labels: `[B, T, H, W]` ground truth in {0, 1} (0/255 with `mask_values="0/255"`).
            labeled_frames: `[B, T]` bool, frames to score (all when None).
            video_ids: one id per video (defaults to running numbers); frames of the same id
                form one video, and videos are batched in the order they first appear.
            categories: one category per video, for `compute(per_category=True)`.
        """
        if logits.dim() == 5:
            if logits.shape[2] != 1:
                raise ValueError(
                    f"logits [B, T, L, H, W] must have L=1 for binary masks, got {tuple(logits.shape)}"
                )
            logits = logits[:, :, 0]
        if logits.dim() != 4 or logits.shape != labels.shape:
            raise ValueError(
                f"logits must be [B, T, H, W] (or [B, T, 1, H, W]) matching labels {tuple(labels.shape)}, "
                f"got {tuple(logits.shape)}"
            )
        selection = _frame_selection(labels, labeled_frames)
        ids = _video_ids(video_ids, labels.shape[0], len({record["video"] for record in self.records}))
        cats = _categories(categories, labels.shape[0])
        labels = check_binary_mask("labels", labels.detach().cpu(), self.mask_values)
        predictions = _checked_predictions("logits", logits, self.prediction_type)
        if (
            self.prediction_type == "logits"
            and not self._warned_probabilities
            and _looks_like_probabilities(predictions[selection])
        ):
            warnings.warn(
                "every prediction value lies in [0, 1]: if these are probabilities rather than logits, "
                "pass prediction_type='probabilities' (as logits they all count as foreground)",
                stacklevel=2,
            )
            self._warned_probabilities = True
        video_index, frame_index = torch.nonzero(selection, as_tuple=True)
        if not len(video_index):
            return
        probabilities = _frame_probabilities(predictions[video_index, frame_index], self.prediction_type)
        scores = _binary_scores(probabilities, labels[video_index, frame_index].float())
        for video, frame_scores in zip(video_index.tolist(), scores):
            self.records.append({"video": ids[video], "category": cats[video], **frame_scores})

    def merge(self, records: list[dict]) -> None:
        """Add records gathered from other processes."""
        self.records.extend(records)

    def compute(self, per_category: bool = False) -> dict:
        """`{"miou", "fscore", "definition", "fscore_batch_videos", "num_videos", "num_frames"}`;
        with `per_category` also `"per_category": {category: {...}}` (each category's videos
        batched among themselves)."""
        result = self._summarise(self.records)
        if per_category:
            groups = defaultdict(list)
            for record in self.records:
                groups[record["category"]].append(record)
            result["per_category"] = {
                str(name): self._summarise(group)
                for name, group in sorted(groups.items(), key=lambda item: str(item[0]))
            }
        return result

    def _summarise(self, records: list[dict]) -> dict:
        videos = defaultdict(list)
        for record in records:
            videos[record["video"]].append(record)
        official = self.definition == "official"
        if not records:
            miou = fscore = float("nan")
        elif official:
            frames_of = list(videos.values())
            size = self.fscore_batch_videos
            batches = [
                list(itertools.chain.from_iterable(frames_of[start : start + size]))
                for start in range(0, len(frames_of), size)
            ]
            miou = sum(_mean([r["official_iou"] for r in frames]) for frames in batches) / len(batches)
            fscore = sum(_max_mean_curve(frames) for frames in batches) / len(batches)
        else:
            miou = _mean([record["jaccard"] for record in records])
            fscore = _max_mean_curve(records)
        return {
            "miou": miou,
            "fscore": fscore,
            "definition": self.definition,
            "fscore_batch_videos": self.fscore_batch_videos if official else None,
            "num_videos": len(videos),
            "num_frames": len(records),
        }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _max_mean_curve(records: list[dict]) -> float:
    curves = [record["f_curve"] for record in records if record["f_curve"] is not None]
    if not curves:
        return 0.0
    return torch.tensor(curves, dtype=torch.float64).mean(dim=0).max().item()


@dataclass
class SemanticSegmentationMetric:
    """Streaming AVSS metrics over `num_classes` classes (71 for AVSBench-semantic).

    Args:
        num_classes: number of classes including the background.
        definition: "official" (AVSBench colour metrics) or "dataset" (dataset-wide IoU).
        ignore_index: label of pixels left out of both prediction and ground truth counts
            (255, as `avs_models.models.labels.IGNORE_INDEX`); None to allow none.
    """

    num_classes: int = 71
    definition: str = "official"
    ignore_index: int | None = IGNORE_INDEX

    def __post_init__(self) -> None:
        _check_choice("definition", self.definition, SEMANTIC_DEFINITIONS)
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        self.reset()

    def reset(self) -> None:
        zeros = [0.0] * self.num_classes
        self.state = {
            "iou_sum": list(zeros),
            "fscore_sum": list(zeros),
            "frame_count": list(zeros),
            "intersection": list(zeros),
            "union": list(zeros),
            "num_frames": 0,
        }

    def update(
        self, logits: torch.Tensor, labels: torch.Tensor, labeled_frames: torch.Tensor | None = None
    ) -> None:
        """Add a batch: `logits` `[B, T, C, H, W]` class logits, `labels` `[B, T, H, W]` class ids in
        `[0, num_classes)` or `ignore_index`, `labeled_frames` `[B, T]` (frames to score; all when None)."""
        if logits.dim() != 5 or logits.shape[2] != self.num_classes:
            raise ValueError(f"logits must be [B, T, {self.num_classes}, H, W], got {tuple(logits.shape)}")
        if labels.shape != logits.shape[:2] + logits.shape[3:]:
            raise ValueError(f"labels must be [B, T, H, W] matching logits, got {tuple(labels.shape)}")
        selection = _frame_selection(labels, labeled_frames)
        logits = logits.detach().cpu()[selection]
        if logits.is_floating_point() and bool(torch.isnan(logits).any()):
            raise ValueError(f"`logits` holds NaN at {int(torch.isnan(logits).sum())} value(s)")
        targets = check_class_map(
            "labels", labels.detach().cpu()[selection], self.num_classes, self.ignore_index
        )
        for prediction, target in zip(logits.argmax(dim=1), targets):
            self._add_frame(prediction.flatten(), target.flatten())

    def _add_frame(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        if self.ignore_index is not None:
            # As the official code's excluded pixels: in neither the predicted nor the labelled counts.
            kept = target != self.ignore_index
            prediction, target = prediction[kept], target[kept]
        count = self.num_classes
        intersection = torch.bincount(target[prediction == target], minlength=count).double()
        predicted = torch.bincount(prediction, minlength=count).double()
        labelled = torch.bincount(target, minlength=count).double()
        union = predicted + labelled - intersection
        iou = intersection / (union + _SEMANTIC_EPS)
        precision = intersection / predicted
        recall = intersection / labelled
        fscore = (1 + F_BETA_SQUARED) * precision * recall / (F_BETA_SQUARED * precision + recall)
        fscore = torch.nan_to_num(fscore, nan=0.0)
        for key, values in (
            ("iou_sum", iou),
            ("fscore_sum", fscore),
            ("frame_count", (union > 0).double()),
            ("intersection", intersection),
            ("union", union),
        ):
            self.state[key] = [a + b for a, b in zip(self.state[key], values.tolist())]
        self.state["num_frames"] += 1

    def merge(self, state: dict) -> None:
        """Add the `state` of another process's metric."""
        for key, values in state.items():
            self.state[key] = (
                values + self.state[key]
                if key == "num_frames"
                else [a + b for a, b in zip(self.state[key], values)]
            )

    def compute(self) -> dict:
        """`{"miou", "fscore", "per_class_iou", "per_class_fscore", "definition", "num_frames"}`."""
        counts = torch.tensor(self.state["frame_count"], dtype=torch.float64)
        seen = counts > 0
        if self.definition == "official":
            per_class_iou = torch.nan_to_num(
                torch.tensor(self.state["iou_sum"], dtype=torch.float64) / counts, nan=0.0
            )
            miou = per_class_iou.mean().item()
        else:
            union = torch.tensor(self.state["union"], dtype=torch.float64)
            per_class_iou = torch.nan_to_num(
                torch.tensor(self.state["intersection"], dtype=torch.float64) / union, nan=0.0
            )
            miou = per_class_iou[seen].mean().item() if seen.any() else float("nan")
        per_class_fscore = torch.nan_to_num(
            torch.tensor(self.state["fscore_sum"], dtype=torch.float64) / counts, nan=0.0
        )
        fscore = (
            per_class_fscore.mean().item()
            if self.definition == "official"
            else (per_class_fscore[seen].mean().item() if seen.any() else float("nan"))
        )
        return {
            "miou": miou,
            "fscore": fscore,
            "per_class_iou": per_class_iou.tolist(),
            "per_class_fscore": per_class_fscore.tolist(),
            "definition": self.definition,
            "num_frames": self.state["num_frames"],
        }
