"""`avs-models explain` and `avs_models.explain`: the papers' figures of tiny PCMANet and C3N models on real
videos, checked against the models' own outputs pixel by pixel."""

import copy
import json

import numpy as np
import pytest
import torch
from media import frame_brightness, write_frames_and_wav, write_video
from PIL import Image
from test_cli import assert_one_line_error, run_cli
from tiny_training import TINY_AVSEGFORMER, TINY_C3N, TINY_MODEL

from avs_models import (
    AVSegFormerConfig,
    AVSegFormerForAudioVisualSegmentation,
    C3NConfig,
    C3NForAudioVisualSegmentation,
    PCMANetConfig,
    PCMANetForAudioVisualSegmentation,
)
from avs_models.cli import main
from avs_models.explanation import (
    consensus_class_names,
    draw_explanation,
    explain,
    explain_clip,
    load_model_and_processor,
    read_clip,
)
from avs_models.models.vggish import VGGishFeatureExtractor
from avs_models.plotting import (
    ATTENTION_COLORMAP,
    DPI,
    HEAT_ALPHA,
    KEPT_TOKEN_COLOUR,
    MASK_ALPHA,
    SIMILARITY_COLORMAP,
    colormap,
    save_figure,
)
from avs_models.processing import AudioVisualImageProcessor, AudioVisualProcessor

IMAGE_SIZE = 64  # stage maps of 16, 8, 4 and 2 tokens a side
NUM_FRAMES = 3
VISUAL_NAMES = ["guitar", "drum", "dog", "car", "piano", "violin"]


def tiny_processor() -> AudioVisualProcessor:
    return AudioVisualProcessor(
        AudioVisualImageProcessor(size=IMAGE_SIZE), VGGishFeatureExtractor(), num_frames=NUM_FRAMES
    )


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    # 4 s: a full clip of 3 s and a padded one; frames not square, so maps are stretched to the frame.
    return write_video(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=4, fps=2, size=(48, 64))


@pytest.fixture(scope="module")
def pcmanet_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pcmanet")
    torch.manual_seed(0)
    PCMANetForAudioVisualSegmentation(PCMANetConfig(**copy.deepcopy(TINY_MODEL["config"]))).save_pretrained(
        folder
    )
    tiny_processor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def c3n_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("c3n")
    torch.manual_seed(0)
    model = C3NForAudioVisualSegmentation(
        C3NConfig(**copy.deepcopy(TINY_C3N["config"]), visual_label_names=VISUAL_NAMES)
    )
    model.set_label_similarity(torch.rand(6, 5))
    model.save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return folder


def explained(model_dir, video):
    """The model, its explanation of the video's first clip, and the model's own output on that clip."""
    model, processor = load_model_and_processor(model_dir)
    explanation = explain_clip(model, processor, read_clip(processor, video))
    inputs = processor(video)
    with torch.no_grad():
        output = model(
            pixel_values=inputs["pixel_values"][:1],
            input_features=inputs["input_features"][:1],
            frame_mask=inputs["frame_mask"][:1],
            output_attentions=True,
        )
    return model, explanation, output


@pytest.fixture(scope="module")
def pcmanet(pcmanet_dir, video):
    return explained(pcmanet_dir, video)


@pytest.fixture(scope="module")
def c3n(c3n_dir, video):
    return explained(c3n_dir, video)


def saved_png(figure, path) -> np.ndarray:
    """Save `figure` and read the PNG back, checking that it has the figure's size."""
    save_figure(figure, path)
    png = np.asarray(Image.open(path).convert("RGB"))
    width, height = (figure.get_size_inches() * DPI).round().astype(int)
    assert png.shape[:2] == (height, width)
    return png


def cell_colours(png: np.ndarray, axes, shape: tuple[int, int]) -> np.ndarray:
    """The colour drawn at the centre of each cell of an `[h, w]` map shown in `axes` (median of 3x3 pixels)."""
    box = axes.get_window_extent()
    top, left = png.shape[0] - box.y1, box.x0
    height, width = box.height, box.width
    colours = np.zeros((*shape, 3))
    for (row, column), _ in np.ndenumerate(np.zeros(shape)):
        y = int(top + (row + 0.5) * height / shape[0])
        x = int(left + (column + 0.5) * width / shape[1])
        colours[row, column] = np.median(png[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3), axis=0)
    return colours


def grey_of(frame: np.ndarray) -> float:
    # The test videos' frames are flat grey: the frame a map is drawn over has one colour.
    return float(np.median(frame))


# ----------------------------------------------------------------------------- PCMANet
def test_pcmanet_explanation_is_the_models_output_on_the_processors_clip(pcmanet):
    _, explanation, output = pcmanet
    assert explanation.times == pytest.approx([0.5, 1.5, 2.5])
    assert [grey_of(frame) for frame in explanation.frames] == pytest.approx(
        [frame_brightness(index) for index in (1, 3, 5)], abs=2
    )
    assert explanation.confidence_mask_stages == [4, 3, 2]
    assert [masks.shape for masks in explanation.confidence_masks] == [(3, 2, 2), (3, 4, 4), (3, 8, 8)]
    for drawn, returned in zip(explanation.confidence_masks, output.confidence_masks):
        np.testing.assert_array_equal(drawn, returned[0, :, 0].numpy())
    assert explanation.kept_token_ratios == pytest.approx(output.kept_token_ratios.tolist())
    expected_masks = (output.logits[0, :, 0] > 0).numpy()
    np.testing.assert_array_equal(np.stack(explanation.predicted_masks), expected_masks)


def test_second_clip_holds_the_real_seconds_only(pcmanet_dir, video):
    model, processor = load_model_and_processor(pcmanet_dir)
    explanation = explain_clip(model, processor, read_clip(processor, video, clip=1))
    assert explanation.times == pytest.approx([3.5])
    assert len(explanation.frames) == len(explanation.predicted_masks) == 1
    assert all(len(masks) == 1 for masks in explanation.confidence_masks)
    with pytest.raises(ValueError, match="has 2 clip"):
        read_clip(processor, video, clip=2)


def test_confidence_mask_figure_draws_every_token_as_the_model_marked_it(pcmanet, tmp_path):
    explanation = pcmanet[1]
    figure = draw_explanation(explanation)["confidence_masks"]
    png = saved_png(figure, tmp_path / "masks.png")
    grid = np.array(figure.axes).reshape(NUM_FRAMES, 4)
    kinds_seen = set()
    for frame_index, frame in enumerate(explanation.frames):
        grey = grey_of(frame)
        kept_colour = (1 - MASK_ALPHA) * grey + MASK_ALPHA * np.array(KEPT_TOKEN_COLOUR)
        for column, masks in enumerate(explanation.confidence_masks, start=1):
            mask = masks[frame_index]
            drawn = cell_colours(png, grid[frame_index, column], mask.shape)
            expected = np.where(mask[..., None] > 0, kept_colour, grey)
            np.testing.assert_allclose(drawn, expected, atol=6)
            kinds_seen |= set(np.unique(mask).tolist())
            assert f"{mask.mean():.0%} kept" in grid[frame_index, column].get_title()
    assert kinds_seen == {0.0, 1.0}  # both kept and confident tokens were checked
    ratios = ", ".join(f"stage {s} {r:.1%}" for s, r in zip([4, 3, 2], explanation.kept_token_ratios))
    assert ratios in figure.get_suptitle()


def test_grouped_attention_maps_show_the_models_similarities(pcmanet, tmp_path):
    _, explanation, output = pcmanet
    groups = TINY_MODEL["config"]["avga_groups"]
    assert [maps.shape for maps in explanation.grouped_attention] == [
        (NUM_FRAMES, groups, size, size) for size in (16, 8, 4, 2)
    ]
    for drawn, returned in zip(explanation.grouped_attention, output.attentions):
        np.testing.assert_allclose(drawn, returned[0].numpy())

    frame = 1
    figure = draw_explanation(explanation, frame=frame)["grouped_attention"]
    assert "frame 2 (1.5 s)" in figure.get_suptitle()
    png = saved_png(figure, tmp_path / "avga.png")
    grid = np.array([axes for axes in figure.axes if axes.get_images()]).reshape(4, groups + 1)
    maps = [stage_maps[frame] for stage_maps in explanation.grouped_attention]
    low, high = min(float(m.min()) for m in maps), max(float(m.max()) for m in maps)  # one scale for all
    cmap = colormap(SIMILARITY_COLORMAP)
    grey = grey_of(explanation.frames[frame])
    for stage, stage_maps in enumerate(maps):
        for group, values in enumerate(stage_maps):
            expected = (1 - HEAT_ALPHA) * grey + HEAT_ALPHA * 255 * cmap((values - low) / (high - low))[
                ..., :3
            ]
            np.testing.assert_allclose(
                cell_colours(png, grid[stage, group + 1], values.shape), expected, atol=6
            )


# ----------------------------------------------------------------------------- C3N
def test_c3n_consensus_is_the_models_output_and_the_figure_draws_it(c3n, tmp_path):
    model, explanation, output = c3n
    visual_names, audio_names = consensus_class_names(model.config)
    assert visual_names == VISUAL_NAMES
    assert audio_names == [f"audio class {index}" for index in range(5)]
    for frame_index, entry in enumerate(explanation.consensus):
        assert entry.visual_classes == [
            VISUAL_NAMES[i] for i in output.consensus_top_visual_classes[0, frame_index]
        ]
        assert entry.audio_classes == [
            audio_names[i] for i in output.consensus_top_audio_classes[0, frame_index]
        ]
        assert entry.visual_confidences == pytest.approx(
            output.consensus_top_visual_confidences[0, frame_index].tolist()
        )
        assert entry.audio_confidences == pytest.approx(
            output.consensus_top_audio_confidences[0, frame_index].tolist()
        )
        np.testing.assert_allclose(
            entry.pair_scores, output.consensus_top_pair_scores[0, frame_index].numpy()
        )
        assert entry.unified_label == VISUAL_NAMES[output.unified_labels[0, frame_index]]

    figure = draw_explanation(explanation)["consensus"]
    saved_png(figure, tmp_path / "consensus.png")
    grid = np.array(figure.axes).reshape(NUM_FRAMES, 4)
    for frame_index, entry in enumerate(explanation.consensus):
        assert f"unified label: {entry.unified_label}" in grid[frame_index, 0].get_title()
        for axes, names, confidences in (
            (grid[frame_index, 1], entry.visual_classes, entry.visual_confidences),
            (grid[frame_index, 2], entry.audio_classes, entry.audio_confidences),
        ):
            assert [label.get_text() for label in axes.get_yticklabels()] == names
            assert [bar.get_width() for bar in axes.patches] == pytest.approx(confidences)
        shown = grid[frame_index, 3].get_images()[0].get_array()
        np.testing.assert_allclose(shown, entry.pair_scores)


def test_spatial_attention_heat_maps_show_the_models_values(c3n, tmp_path):
    _, explanation, output = c3n
    figure = draw_explanation(explanation)["spatial_attention"]
    png = saved_png(figure, tmp_path / "attention.png")
    image_axes = [axes for axes in figure.axes if axes.get_images()]
    grid = np.array(image_axes).reshape(5, NUM_FRAMES)  # frames, then stages 1 to 4
    cmap = colormap(ATTENTION_COLORMAP)
    assert [maps.shape[1:] for maps in explanation.spatial_attention] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    for stage, maps in enumerate(explanation.spatial_attention, start=1):
        low, high = float(maps.min()), float(maps.max())
        for frame_index, frame in enumerate(explanation.frames):
            values = maps[frame_index]
            expected = (1 - HEAT_ALPHA) * grey_of(frame) + HEAT_ALPHA * 255 * cmap(
                (values - low) / (high - low)
            )[..., :3]
            drawn = cell_colours(png, grid[stage, frame_index], values.shape)
            np.testing.assert_allclose(drawn, expected, atol=6)
    # The maps are the model's CCAM spatial attention.
    for drawn, returned in zip(explanation.spatial_attention, output.attentions):
        np.testing.assert_allclose(drawn, returned[0].numpy())


# ----------------------------------------------------------------------------- files and command line
def test_explain_writes_the_pictures_and_their_numbers(pcmanet_dir, c3n_dir, video, tmp_path):
    paths = explain(pcmanet_dir, video, tmp_path / "pcmanet")
    assert sorted(paths) == ["confidence_masks", "grouped_attention", "summary"]
    summary = json.loads(paths["summary"].read_text())
    assert summary["model_type"] == "pcmanet" and summary["frame_times"] == pytest.approx([0.5, 1.5, 2.5])
    assert list(summary["kept_token_ratios"]) == ["stage 4", "stage 3", "stage 2"]
    with Image.open(paths["confidence_masks"]) as picture:
        assert picture.width >= 4 * 200 and picture.height >= NUM_FRAMES * 150

    paths = explain(c3n_dir, video, tmp_path / "c3n")
    assert sorted(paths) == ["consensus", "spatial_attention", "summary"]
    summary = json.loads(paths["summary"].read_text())
    assert len(summary["consensus"]) == NUM_FRAMES
    assert set(summary["consensus"][0]["top_visual_classes"]) <= set(VISUAL_NAMES)


def test_cli_explain_video_and_frames_folder(pcmanet_dir, video, tmp_path, capsys):
    assert main(["explain", str(pcmanet_dir), str(video), "--out", str(tmp_path / "video")]) == 0
    assert "confidence_masks.png grouped_attention.png explain.json" in capsys.readouterr().out
    assert (tmp_path / "video" / "confidence_masks.png").is_file()
    frames_dir, wav = write_frames_and_wav(tmp_path / "frames", seconds=3)
    code, err = run_cli(
        capsys, "explain", pcmanet_dir, frames_dir, "--audio", wav, "--out", tmp_path / "frames_out"
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "frames_out" / "explain.json").read_text())
    assert summary["frame_times"] == pytest.approx([1.0, 2.0, 3.0])


def test_cli_explain_errors_are_one_line(pcmanet_dir, video, tmp_path, capsys):
    frames_dir, wav = write_frames_and_wav(tmp_path / "frames", seconds=3)
    bare = tmp_path / "bare"
    config = PCMANetConfig(**{**copy.deepcopy(TINY_MODEL["config"]), "audio_config": None})
    PCMANetForAudioVisualSegmentation(config).save_pretrained(bare)
    other_family = tmp_path / "avsegformer"
    AVSegFormerForAudioVisualSegmentation(
        AVSegFormerConfig(**copy.deepcopy(TINY_AVSEGFORMER["config"]))
    ).save_pretrained(other_family)
    cases = [
        (["explain", tmp_path / "missing", video], ["model folder not found", "missing"]),
        (["explain", pcmanet_dir, tmp_path / "missing.mp4"], ["video not found", "missing.mp4"]),
        (["explain", pcmanet_dir, frames_dir], ["folder of frames", "--audio FILE"]),
        (["explain", pcmanet_dir, video, "--audio", wav], ["goes with a frames folder", "clip.mp4"]),
        (["explain", pcmanet_dir, video, "--clip", "5"], ["has 2 clip", "clip 5 is past its end"]),
        (["explain", pcmanet_dir, video, "--frame", "3"], ["frame must be in [0, 2]"]),
        (["explain", bare, video], ["no audio encoder"]),
        (["explain", other_family, video], ["figures of pcmanet and c3n models", "'avsegformer'"]),
    ]
    for argv, fragments in cases:
        code, err = run_cli(capsys, *argv, "--out", tmp_path / "out")
        assert_one_line_error(code, err, "explain", *fragments)
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", str(pcmanet_dir), str(video), "--out", str(tmp_path / "out"), "--clip", "-1"])
    assert exit_info.value.code == 2
    assert "argument --clip: must be 0 or more" in capsys.readouterr().err
