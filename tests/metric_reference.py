"""The F-score and IoUs of one frame as the metric computed them before its counting formulation,
and as the official AVSBench scripts do: every pixel compared with every one of the 255 thresholds.
The reference for `tests/test_metrics.py` (exact equality) and `benchmarks/bench_evaluation.py`."""

import torch


def per_threshold_loop_scores(probabilities: torch.Tensor, target: torch.Tensor) -> dict:
    """`probabilities` and `target` ({0, 1}) are `[H, W]`; returns official IoU, Jaccard, F curve."""
    target = target.float()
    prediction = (probabilities > 0.5).float()
    intersection = (prediction * target).sum()
    union = torch.maximum(prediction, target).sum()
    if target.sum() == 0:
        official_iou = ((1 - target) * (1 - prediction)).sum() / (target.numel() + 1e-7)
        jaccard = 1.0 if prediction.sum() == 0 else 0.0
    else:
        official_iou = intersection / (union + 1e-7)
        jaccard = (intersection / union).item()
    f_curve = None
    if target.mean() != 0:
        thresholds = torch.linspace(0, 1 - 1e-10, 255)
        above = (probabilities.flatten()[None, :] >= thresholds[:, None]).float()
        true_positives = (above * target.flatten()[None, :]).sum(dim=1)
        precision = true_positives / (above.sum(dim=1) + 1e-20)
        recall = true_positives / (target.sum() + 1e-20)
        curve = (1 + 0.3) * precision * recall / (0.3 * precision + recall)
        f_curve = torch.nan_to_num(curve, nan=0.0).tolist()
    return {"official_iou": float(official_iou), "jaccard": float(jaccard), "f_curve": f_curve}
