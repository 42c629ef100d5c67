"""Streaming mIoU and F-score for audio-visual segmentation.

Two definitions are offered for S4/MS3 (binary masks), and every result names the one it used:

- `"official"` reproduces the AVSBench evaluation scripts, which score one video per batch:
  a frame's IoU thresholds `sigmoid(logit) > 0.5`; a frame whose ground truth is empty scores
  the fraction of pixels correctly left as background (not 0 or 1); `1e-7` is added to the
  union; a video's IoU is the mean over its frames and the result the mean over videos. The
  F-score (beta^2 = 0.3) builds a precision/recall curve at 255 thresholds of
  `linspace(0, 1 - 1e-10, 255)` on the sigmoid, averages the per-frame F curves over the
  video's frames whose ground truth is not all black, takes the maximum over thresholds, and
  averages these maxima over videos (a video whose ground truths are all black scores 0).
- `"per_frame"`: plain Jaccard index per frame (empty ground truth scores 1 when the prediction
  is empty too, else 0), averaged over all frames; the F-score averages the per-frame F curves
  over all frames that are not all black and then takes the maximum over thresholds.

For AVSS (71 classes) `SemanticSegmentationMetric` reproduces the official colour metrics: for
each frame and class, IoU = intersection / (union + 2.22e-16) and the F-score from that frame's
precision and recall (0 where undefined); both are summed over frames and divided per class by
the number of frames in which the class occurs in prediction or ground truth; mIoU and F-score
are means over all classes (a class never seen counts as 0). Its `"dataset"` definition is the
usual dataset-wide mIoU: per-class intersection and union summed over frames, averaged over the
classes that occur.

Metric objects are fed batch by batch with `update(...)` and read with `compute()`. Their
per-frame records are plain Python data, so several processes can gather them (e.g. with
`accelerate.utils.gather_object`) and `merge` them before computing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch

BINARY_DEFINITIONS = ("official", "per_frame")
SEMANTIC_DEFINITIONS = ("official", "dataset")
F_BETA_SQUARED = 0.3
NUM_THRESHOLDS = 255
_IOU_EPS = 1e-7
_PR_EPS = 1e-20
_SEMANTIC_EPS = 2.220446049250313e-16


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


def binary_frame_scores(logits: torch.Tensor, target: torch.Tensor) -> dict:
    """Scores of one frame: `logits` and `target` are `[H, W]` (target in {0, 1}).

    Returns the official IoU, the plain Jaccard IoU and the F curve over the 255 thresholds
    (`None` when the ground truth is all black, which F-scores skip).
    """
    target = target.float()
    prediction = (torch.sigmoid(logits.float()) > 0.5).float()
    intersection = (prediction * target).sum()
    union = torch.maximum(prediction, target).sum()
    if target.sum() == 0:
        official_iou = ((1 - target) * (1 - prediction)).sum() / (target.numel() + _IOU_EPS)
        jaccard = 1.0 if prediction.sum() == 0 else 0.0
    else:
        official_iou = intersection / (union + _IOU_EPS)
        jaccard = (intersection / union).item()
    f_curve = None
    if target.mean() != 0:
        probabilities = torch.sigmoid(logits.float()).flatten()
        thresholds = torch.linspace(0, 1 - 1e-10, NUM_THRESHOLDS)
        above = (probabilities[None, :] >= thresholds[:, None]).float()
        true_positives = (above * target.flatten()[None, :]).sum(dim=1)
        precision = true_positives / (above.sum(dim=1) + _PR_EPS)
        recall = true_positives / (target.sum() + _PR_EPS)
        curve = (1 + F_BETA_SQUARED) * precision * recall / (F_BETA_SQUARED * precision + recall)
        f_curve = torch.nan_to_num(curve, nan=0.0).tolist()
    return {"official_iou": float(official_iou), "jaccard": float(jaccard), "f_curve": f_curve}


@dataclass
class BinaryMaskMetric:
    """Streaming mIoU and F-score for S4/MS3 binary masks.

    Args:
        definition: "official" (AVSBench scripts, per-video averaging) or "per_frame".
    """

    definition: str = "official"
    records: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.definition not in BINARY_DEFINITIONS:
            raise ValueError(f"definition must be one of {BINARY_DEFINITIONS}, got {self.definition!r}")

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
            logits: `[B, T, H, W]` or `[B, T, 1, H, W]` mask logits.
            labels: `[B, T, H, W]` ground truth in {0, 1}.
            labeled_frames: `[B, T]` bool, frames to score (all when None).
            video_ids: one id per video (defaults to running numbers); frames of the same id
                form one video for the official per-video averaging.
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
        logits, labels = logits.detach().cpu(), labels.detach().cpu()
        for video in range(labels.shape[0]):
            for frame in torch.nonzero(selection[video]).flatten().tolist():
                scores = binary_frame_scores(logits[video, frame], labels[video, frame])
                self.records.append({"video": ids[video], "category": cats[video], **scores})

    def merge(self, records: list[dict]) -> None:
        """Add records gathered from other processes."""
        self.records.extend(records)

    def compute(self, per_category: bool = False) -> dict:
        """`{"miou", "fscore", "definition", "num_videos", "num_frames"}`; with `per_category`
        also `"per_category": {category: {...}}`."""
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
        if not records:
            miou = fscore = float("nan")
        elif self.definition == "official":
            miou = sum(_mean([r["official_iou"] for r in frames]) for frames in videos.values()) / len(videos)
            fscore = sum(_max_mean_curve(frames) for frames in videos.values()) / len(videos)
        else:
            miou = _mean([record["jaccard"] for record in records])
            fscore = _max_mean_curve(records)
        return {
            "miou": miou,
            "fscore": fscore,
            "definition": self.definition,
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
    """

    num_classes: int = 71
    definition: str = "official"

    def __post_init__(self) -> None:
        if self.definition not in SEMANTIC_DEFINITIONS:
            raise ValueError(f"definition must be one of {SEMANTIC_DEFINITIONS}, got {self.definition!r}")
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
        """Add a batch: `logits` `[B, T, C, H, W]`, `labels` `[B, T, H, W]` class ids,
        `labeled_frames` `[B, T]` (frames to score; all when None)."""
        if logits.dim() != 5 or logits.shape[2] != self.num_classes:
            raise ValueError(f"logits must be [B, T, {self.num_classes}, H, W], got {tuple(logits.shape)}")
        if labels.shape != logits.shape[:2] + logits.shape[3:]:
            raise ValueError(f"labels must be [B, T, H, W] matching logits, got {tuple(labels.shape)}")
        selection = _frame_selection(labels, labeled_frames)
        predictions = logits.detach().cpu().argmax(dim=2)[selection]
        targets = labels.detach().cpu().long()[selection]
        if targets.numel() and (targets.min() < 0 or targets.max() >= self.num_classes):
            raise ValueError(
                f"labels must be class ids in [0, {self.num_classes}), got {targets.min()}..{targets.max()}"
            )
        for prediction, target in zip(predictions, targets):
            self._add_frame(prediction.flatten(), target.flatten())

    def _add_frame(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
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
