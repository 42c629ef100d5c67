"""Metric values on crafted 2x2 masks, computed by hand (see the comments for each number)."""

import math

import pytest
import torch
from metric_reference import per_threshold_loop_scores

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


# ----- the F-score's counting formulation gives the per-threshold loop's numbers exactly


def edge_case_frames(generator):
    size = (7, 9)  # odd sizes: no frame fills whole vector registers
    thresholds = torch.linspace(0, 1 - 1e-10, 255)
    on_thresholds = thresholds[torch.randint(0, 255, size, generator=generator)]
    just_below = torch.nextafter(on_thresholds, torch.tensor(-1.0)).clamp(min=0)
    some = (torch.rand(size, generator=generator) > 0.5).float()
    return [
        ("empty truth, some predicted", torch.rand(size, generator=generator), torch.zeros(size)),
        ("empty truth, nothing predicted", torch.zeros(size), torch.zeros(size)),
        ("all foreground", torch.rand(size, generator=generator), torch.ones(size)),
        ("all predicted", torch.ones(size), some),
        ("ties at thresholds", on_thresholds, some),
        ("just below thresholds", just_below, some),
        ("exactly 0.5", torch.full(size, 0.5), some),
        ("zeros and ones", some, some),
    ]


def test_counting_fscore_equals_the_per_threshold_loop_exactly():
    from avs_models.metrics import _binary_scores

    generator = torch.Generator().manual_seed(0)
    frames = edge_case_frames(generator)
    for size in [(2, 2), (7, 9), (32, 32), (224, 224)]:
        probabilities = torch.rand(size, generator=generator)
        target = (torch.rand(size, generator=generator) > 0.7).float()
        frames.append((f"random {size}", probabilities, target))
    for name, probabilities, target in frames:
        expected = per_threshold_loop_scores(probabilities, target)
        assert _binary_scores(probabilities[None], target[None])[0] == expected, name
    # several frames at once give each frame's own numbers
    stacked = [frame for frame in frames if frame[1].shape == (7, 9)]
    batched = _binary_scores(torch.stack([f[1] for f in stacked]), torch.stack([f[2] for f in stacked]))
    assert batched == [per_threshold_loop_scores(f[1], f[2]) for f in stacked]


def test_metric_records_equal_the_per_threshold_loop_on_logits():
    from avs_models.metrics import binary_frame_scores

    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 13, 11, generator=generator) * 6
    logits[0, 0, :2] = float("inf")
    logits[0, 1, :2] = -float("inf")
    logits[1, 2] = 0.0  # sigmoid exactly 0.5: not foreground
    labels = (torch.rand(2, 3, 13, 11, generator=generator) > 0.6).float()
    labels[1, 0] = 0
    labels[1, 1] = 1
    metric = BinaryMaskMetric()
    metric.update(logits, labels)
    expected = [
        per_threshold_loop_scores(torch.sigmoid(logits[v, t]), labels[v, t])
        for v in range(2)
        for t in range(3)
    ]
    assert [{k: r[k] for k in ("official_iou", "jaccard", "f_curve")} for r in metric.records] == expected
    assert binary_frame_scores(logits[0, 0], labels[0, 0]) == expected[0]


# ----- labels and predictions mean one thing


def test_binary_references_outside_zero_one_are_refused():
    # The case: predictions 5.0 with 0/255 references used to give an F-score of 4.28.
    predictions, references = torch.full((1, 1, 4, 4), 5.0), torch.full((1, 1, 4, 4), 255.0)
    with pytest.raises(
        ValueError, match=r"`labels` must be a binary mask with values 0/1; found values 255 \(0/255"
    ):
        BinaryMaskMetric().update(predictions, references)
    with pytest.raises(ValueError, match="found values 0.5"):
        BinaryMaskMetric().update(predictions, torch.full((1, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="found values nan"):
        BinaryMaskMetric().update(predictions, torch.full((1, 1, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="-1"):
        BinaryMaskMetric().update(predictions, -torch.ones(1, 1, 4, 4))


def test_zero_255_masks_through_the_documented_option():
    logits, labels = video_batch(VIDEOS[0])
    as_255 = BinaryMaskMetric(mask_values="0/255")
    as_255.update(logits, labels * 255)
    as_01 = BinaryMaskMetric()
    as_01.update(logits, labels)
    assert as_255.compute() == as_01.compute()
    with pytest.raises(ValueError, match="values 0/255; found values 1"):
        BinaryMaskMetric(mask_values="0/255").update(logits, labels)
    with pytest.raises(ValueError, match="mask_values"):
        BinaryMaskMetric(mask_values="0-255")
    # bool masks are 0/1 masks
    as_bool = BinaryMaskMetric()
    as_bool.update(logits, labels.bool())
    assert as_bool.compute() == as_01.compute()


def test_predictions_are_checked():
    labels = mask([1, 0], [0, 0])[None, None]
    with pytest.raises(ValueError, match="`logits` holds NaN at 1 pixel"):
        BinaryMaskMetric().update(torch.tensor([[[[float("nan"), 0.0], [0.0, 0.0]]]]), labels)
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].*from -5 to 5"):
        BinaryMaskMetric(prediction_type="probabilities").update(logits([1, 0], [0, 0])[None, None], labels)
    with pytest.raises(ValueError, match="prediction_type"):
        BinaryMaskMetric(prediction_type="scores")
    with pytest.raises(ValueError, match="fscore_batch_videos"):
        BinaryMaskMetric(fscore_batch_videos=0)
    with pytest.raises(TypeError, match="fscore_batch_videos"):
        BinaryMaskMetric(fscore_batch_videos=1.5)


def test_probabilities_score_like_their_logits_and_are_flagged_when_passed_as_logits():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 2, 8, 8, generator=generator) * 4
    labels = (torch.rand(2, 2, 8, 8, generator=generator) > 0.5).float()
    from_logits, from_probabilities = BinaryMaskMetric(), BinaryMaskMetric(prediction_type="probabilities")
    from_logits.update(logits, labels)
    probabilities = torch.stack([torch.sigmoid(frame) for frame in logits.flatten(0, 1)]).view_as(logits)
    from_probabilities.update(probabilities, labels)
    assert from_probabilities.compute() == from_logits.compute()
    misread = BinaryMaskMetric()
    with pytest.warns(UserWarning, match="prediction_type='probabilities'"):
        misread.update(probabilities, labels)
    # hard 0/1 masks read as logits keep their IoU (sigmoid 0.73 vs 0.5): no warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BinaryMaskMetric().update(labels, labels)


# ----- the official F-score is per test batch


def official_script_scores(probabilities, labels, batch_videos):
    """The official test loop, restated: IoU over a batch's frames, F curve averaged over the
    batch's non-black frames and maximised, both averaged over batches of `batch_videos` videos."""
    mious, fscores = [], []
    for start in range(0, probabilities.shape[0], batch_videos):
        p = probabilities[start : start + batch_videos].flatten(0, 1)
        t = labels[start : start + batch_videos].flatten(0, 1)
        scores = [per_threshold_loop_scores(p[i], t[i]) for i in range(len(p))]
        mious.append(sum(s["official_iou"] for s in scores) / len(scores))
        curves = [torch.tensor(s["f_curve"]) for s in scores if s["f_curve"] is not None]
        fscores.append(torch.stack(curves).mean(0).max().item() if curves else 0.0)
    return sum(mious) / len(mious), sum(fscores) / len(fscores)


@pytest.mark.parametrize("batch_videos", [1, 2, 3, 4])
def test_fscore_batch_videos_reproduces_the_official_batches(batch_videos):
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(7, 5, 6, 6, generator=generator) * 3
    labels = (torch.rand(7, 5, 6, 6, generator=generator) > 0.6).float()
    labels[2] = 0  # a video with no object at all
    probabilities = torch.stack([torch.sigmoid(frame) for frame in logits.flatten(0, 1)]).view_as(logits)
    metric = BinaryMaskMetric(fscore_batch_videos=batch_videos)
    for video in range(7):  # fed one video at a time: batches follow the order of the videos
        metric.update(logits[video : video + 1], labels[video : video + 1])
    result = metric.compute()
    miou, fscore = official_script_scores(probabilities, labels, batch_videos)
    assert result["miou"] == pytest.approx(miou, abs=1e-6)
    assert result["fscore"] == pytest.approx(fscore, abs=1e-6)
    assert result["fscore_batch_videos"] == batch_videos and result["num_videos"] == 7


def test_fscore_depends_on_the_batch_by_hand():
    # Videos A (frames A, B) and B (frame A): per video max(0.75) and max(F_A) = 0.5 in the
    # middle, F_A_ZERO at threshold 0, so (0.75 + F_A_ZERO) / 2; batched together, the mean curve
    # of A, B, A is 2/3 in the middle (and below at threshold 0).
    one, two = BinaryMaskMetric(fscore_batch_videos=1), BinaryMaskMetric(fscore_batch_videos=2)
    for metric in (one, two):
        metric.update(*video_batch([FRAME_A, FRAME_B]))
        metric.update(*video_batch([FRAME_A]))
    assert one.compute()["fscore"] == pytest.approx((0.75 + F_A_ZERO) / 2, abs=1e-6)
    assert two.compute()["fscore"] == pytest.approx(2 / 3, abs=1e-6)
    # mIoU: per video (2/3 + 1/3) / 2; one batch of the three frames (1/3 + 1 + 1/3) / 3
    assert one.compute()["miou"] == pytest.approx(0.5, abs=1e-6)
    assert two.compute()["miou"] == pytest.approx(5 / 9, abs=1e-6)
    assert BinaryMaskMetric("per_frame").compute()["fscore_batch_videos"] is None


def test_official_batch_sizes_per_family():
    from avs_models.metrics import OFFICIAL_FSCORE_BATCH_VIDEOS, official_fscore_batch_videos

    assert official_fscore_batch_videos("pcmanet") == official_fscore_batch_videos("c3n") == 1
    assert OFFICIAL_FSCORE_BATCH_VIDEOS["avsegformer"] == 2 and OFFICIAL_FSCORE_BATCH_VIDEOS["tpavi"] == 4
    assert official_fscore_batch_videos("a-family-of-my-own") == 1


# ----- AVSS: class ids and the ignore index


def test_avss_ignore_index_pixels_count_for_nothing():
    # frame 1 of `semantic_metric` with its two mismatching pixels... the [0, 1] pixel (predicted 1,
    # labelled 0) marked 255: class 0 I=1 P=1 L=1 -> IoU 1, F 1; class 1: I=2 P=2 L=2 -> 1
    metric = SemanticSegmentationMetric(num_classes=3)
    labels = torch.tensor([[[[0, 255], [1, 1]]]])
    metric.update(class_logits([[0, 1], [1, 1]], 3)[None, None], labels)
    result = metric.compute()
    assert result["per_class_iou"] == pytest.approx([1.0, 1.0, 0.0])
    assert result["per_class_fscore"] == pytest.approx([1.0, 1.0, 0.0])
    # the same as leaving the pixel out: a 1x3 frame without it
    without = SemanticSegmentationMetric(num_classes=3)
    without.update(class_logits([[0, 1, 1]], 3)[None, None], torch.tensor([[[[0, 1, 1]]]]))
    assert without.compute()["miou"] == result["miou"]
    # a frame with every pixel ignored adds no class occurrence
    empty = SemanticSegmentationMetric(num_classes=3)
    empty.update(class_logits([[2, 2]], 3)[None, None], torch.tensor([[[[255, 255]]]]))
    assert empty.compute()["per_class_iou"] == [0.0, 0.0, 0.0] and empty.compute()["num_frames"] == 1


def test_avss_ignore_index_is_configurable_and_ids_out_of_range_are_refused():
    logits_ = class_logits([[0, 1], [1, 1]], 3)[None, None]
    own = SemanticSegmentationMetric(num_classes=3, ignore_index=7)
    own.update(logits_, torch.tensor([[[[0, 7], [1, 1]]]]))
    default = SemanticSegmentationMetric(num_classes=3)
    default.update(logits_, torch.tensor([[[[0, 255], [1, 1]]]]))
    assert own.compute() == default.compute()
    with pytest.raises(
        ValueError, match=r"`labels` must hold class ids in \[0, 3\) or the ignore index 7; found 255"
    ):
        own.update(logits_, torch.tensor([[[[0, 255], [1, 1]]]]))
    with pytest.raises(ValueError, match=r"in \[0, 71\) or the ignore index 255; found -1, 80"):
        SemanticSegmentationMetric().update(torch.zeros(1, 1, 71, 2, 2), torch.tensor([[[[80, -1], [0, 0]]]]))
    with pytest.raises(ValueError, match=r"class ids in \[0, 3\); found 255"):
        SemanticSegmentationMetric(num_classes=3, ignore_index=None).update(
            logits_, torch.tensor([[[[0, 255], [1, 1]]]])
        )
    with pytest.raises(ValueError, match="whole class ids"):
        SemanticSegmentationMetric(num_classes=3).update(logits_, torch.tensor([[[[0.5, 1.0], [1.0, 1.0]]]]))
    with pytest.raises(ValueError, match="NaN"):
        SemanticSegmentationMetric(num_classes=3).update(
            torch.full((1, 1, 3, 2, 2), float("nan")), torch.zeros(1, 1, 2, 2)
        )


def test_remaining_argument_errors():
    from avs_models.metrics import binary_frame_scores

    with pytest.raises(ValueError, match="is boolean, so it cannot hold 0/255 values"):
        BinaryMaskMetric(mask_values="0/255").update(
            torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match=r"video_ids must have one entry per video \(1\), got 2"):
        BinaryMaskMetric().update(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), video_ids=["a", "b"])
    with pytest.raises(ValueError, match="labels must be"):
        SemanticSegmentationMetric(num_classes=3).update(torch.zeros(1, 1, 3, 2, 2), torch.zeros(1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"must both be \[H, W\]"):
        binary_frame_scores(torch.zeros(2, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="found values 255"):
        binary_frame_scores(torch.zeros(2, 2), torch.full((2, 2), 255))
