"""Metric values on crafted 2x2 masks, computed by hand (see the comments for each number)."""

import math

import pytest
import torch

from avs_models.metrics import BinaryMaskMetric, SemanticSegmentationMetric

ON, OFF = 5.0, -5.0  # sigmoid 0.9933 / 0.0067: above threshold index 1, below index 2 ... 252


def logits(*rows):
    return torch.tensor([[ON if value else OFF for value in row] for row in rows])


def mask(*rows):
    return torch.tensor(rows, dtype=torch.float32)


# Frame A: prediction [[1,0],[1,0]] vs target [[1,1],[0,0]]: IoU 1/3; F at middle thresholds 0.5,
# at threshold 0 (all pixels on) p=1/2, r=1: F = 1.3*0.5/(0.15+1) = 0.565217.
FRAME_A = (logits([1, 0], [1, 0]), mask([1, 1], [0, 0]))
# Frame B: exact prediction of one pixel: IoU 1; F 1 in the middle, 1.3*0.25/(0.075+1) at threshold 0.
FRAME_B = (logits([1, 0], [0, 0]), mask([1, 0], [0, 0]))
# Black ground truth, one predicted pixel: official IoU 3/4 (background kept), Jaccard 0.
BLACK_ONE_PIXEL = (logits([1, 0], [0, 0]), mask([0, 0], [0, 0]))
# Black ground truth, empty prediction: official 1, Jaccard 1.
BLACK_EMPTY = (logits([0, 0], [0, 0]), mask([0, 0], [0, 0]))
# Black ground truth, everything predicted: 0 under both definitions.
BLACK_FULL = (logits([1, 1], [1, 1]), mask([0, 0], [0, 0]))
F_A_ZERO, F_B_ZERO = 0.65 / 1.15, 0.325 / 1.075

VIDEOS = [[FRAME_A, FRAME_B], [FRAME_A, BLACK_ONE_PIXEL], [BLACK_EMPTY, BLACK_FULL]]


def video_batch(frames):
    return torch.stack([f[0] for f in frames])[None], torch.stack([f[1] for f in frames])[None]


def fed_metric(definition, one_batch=False):
    metric = BinaryMaskMetric(definition)
    if one_batch:
        batch_logits = torch.cat([video_batch(video)[0] for video in VIDEOS])
        batch_labels = torch.cat([video_batch(video)[1] for video in VIDEOS])
        metric.update(batch_logits, batch_labels, categories=["x", "y", "y"])
    else:
        for video, category in zip(VIDEOS, ["x", "y", "y"]):
            metric.update(*video_batch(video), categories=[category])
    return metric


@pytest.mark.parametrize("one_batch", [False, True])
def test_official_binary_metric_by_hand(one_batch):
    result = fed_metric("official", one_batch).compute()
    # videos: (1/3 + 1)/2, (1/3 + 3/4)/2, (1 + 0)/2
    assert result["miou"] == pytest.approx((2 / 3 + 13 / 24 + 1 / 2) / 3, abs=1e-6)
    # F per video: max(mean curve) = 0.75 (middle thresholds), F_A_ZERO (black frame skipped),
    # 0 (all frames black)
    assert result["fscore"] == pytest.approx((0.75 + F_A_ZERO + 0.0) / 3, abs=1e-6)
    assert result["definition"] == "official"
    assert (result["num_videos"], result["num_frames"]) == (3, 6)


def test_per_frame_binary_metric_by_hand():
    result = fed_metric("per_frame").compute()
    assert result["miou"] == pytest.approx((1 / 3 + 1 + 1 / 3 + 0 + 1 + 0) / 6)
    # non-black frames A, B, A: middle thresholds (0.5 + 1 + 0.5)/3 beat threshold 0
    assert result["fscore"] == pytest.approx(2 / 3, abs=1e-6)
    assert (2 * F_A_ZERO + F_B_ZERO) / 3 < 2 / 3
    assert result["definition"] == "per_frame"


def test_per_category_and_labeled_frames():
    result = fed_metric("official").compute(per_category=True)
    assert result["per_category"]["x"]["miou"] == pytest.approx(2 / 3, abs=1e-6)
    assert result["per_category"]["y"]["fscore"] == pytest.approx(F_A_ZERO / 2, abs=1e-6)
    metric = BinaryMaskMetric()
    batch_logits, batch_labels = video_batch(VIDEOS[0])
    metric.update(batch_logits, batch_labels, labeled_frames=torch.tensor([[False, True]]))
    assert metric.compute()["miou"] == pytest.approx(1.0, abs=1e-6)
    assert metric.compute()["num_frames"] == 1


def test_empty_prediction_on_object_and_saturated_logits():
    metric = BinaryMaskMetric()
    metric.update(torch.full((1, 1, 2, 2), -30.0), mask([1, 0], [0, 0])[None, None])
    # IoU 0; the sigmoid of -30 is still >= threshold 0, so F at threshold 0 is 1.3*0.25/1.075
    assert metric.compute()["miou"] == pytest.approx(0.0)
    assert metric.compute()["fscore"] == pytest.approx(F_B_ZERO, abs=1e-6)
    # 5-D logits [B, T, 1, H, W] are accepted; merge adds records from elsewhere
    other = BinaryMaskMetric()
    other.update(video_batch([FRAME_B])[0][:, :, None], video_batch([FRAME_B])[1])
    metric.merge(other.records)
    assert metric.compute()["miou"] == pytest.approx(0.5, abs=1e-6)
    assert math.isnan(BinaryMaskMetric().compute()["miou"])


def test_binary_metric_errors():
    with pytest.raises(ValueError, match="definition"):
        BinaryMaskMetric("mean")
    with pytest.raises(ValueError, match="logits must be"):
        BinaryMaskMetric().update(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match="L=1"):
        BinaryMaskMetric().update(torch.zeros(1, 2, 2, 3, 3), torch.zeros(1, 2, 3, 3))
    with pytest.raises(ValueError, match="labeled_frames"):
        BinaryMaskMetric().update(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), torch.ones(2, 1))
    with pytest.raises(ValueError, match="categories"):
        BinaryMaskMetric().update(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), categories=["a", "b"])


def class_logits(ids, num_classes):
    return torch.nn.functional.one_hot(torch.tensor(ids), num_classes).permute(2, 0, 1).float() * 5


def semantic_metric(num_classes, definition="official"):
    # frame 1: target [[0,0],[1,1]], prediction [[0,1],[1,1]]
    #   class 0: I=1 P=1 L=2 U=2 -> IoU 1/2, F 1.3*0.5/0.8 = 0.8125; class 1: I=2 P=3 L=2 -> 2/3, F 0.72222
    # frame 2: target all 2, prediction [[2,2],[0,0]]
    #   class 0: I=0 P=2 L=0 -> IoU 0 (counted), F 0; class 2: I=2 P=2 L=4 -> 1/2, F 0.8125
    metric = SemanticSegmentationMetric(num_classes=num_classes, definition=definition)
    batch_logits = torch.stack(
        [class_logits([[0, 1], [1, 1]], num_classes), class_logits([[2, 2], [0, 0]], num_classes)]
    )
    labels = torch.tensor([[[0, 0], [1, 1]], [[2, 2], [2, 2]]])
    metric.update(batch_logits[None], labels[None])
    return metric


def test_official_semantic_metric_by_hand():
    result = semantic_metric(3).compute()
    assert result["per_class_iou"] == pytest.approx([0.25, 2 / 3, 0.5])
    assert result["miou"] == pytest.approx((0.25 + 2 / 3 + 0.5) / 3)
    assert result["per_class_fscore"] == pytest.approx([0.40625, 1.3 * (2 / 3) / 1.2, 0.8125])
    # a class seen in no frame counts as 0 in the official mean
    assert semantic_metric(4).compute()["miou"] == pytest.approx((0.25 + 2 / 3 + 0.5) / 4)
    assert semantic_metric(4).compute()["fscore"] == pytest.approx(
        (0.40625 + 1.3 * (2 / 3) / 1.2 + 0.8125) / 4
    )


def test_dataset_semantic_metric_and_merge():
    # class 0 summed: I=1, U=4; class 1: 2/3; class 2: 2/4; class 3 unseen is left out
    result = semantic_metric(4, "dataset").compute()
    assert result["miou"] == pytest.approx((0.25 + 2 / 3 + 0.5) / 3)
    merged = semantic_metric(3)
    merged.merge(semantic_metric(3).state)
    assert merged.compute()["miou"] == pytest.approx(semantic_metric(3).compute()["miou"])
    assert merged.compute()["num_frames"] == 4


def test_semantic_metric_errors():
    with pytest.raises(ValueError, match="definition"):
        SemanticSegmentationMetric(definition="plain")
    with pytest.raises(ValueError, match="num_classes"):
        SemanticSegmentationMetric(num_classes=1)
    with pytest.raises(ValueError, match="logits must be"):
        SemanticSegmentationMetric(num_classes=3).update(torch.zeros(1, 1, 4, 2, 2), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="class ids"):
        SemanticSegmentationMetric(num_classes=3).update(
            torch.zeros(1, 1, 3, 2, 2), torch.full((1, 1, 2, 2), 7)
        )
