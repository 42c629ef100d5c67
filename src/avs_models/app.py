"""The web demo (`avs-models app`, and the Space's `app.py`): drop a video, see what makes the sound.

A Gradio page: upload or record a video (or pick one of the example clips the app makes itself,
offline), choose a model (any saved folder; by default the small PCMANet of `avs-models demo`,
trained and cached on first use), and get

- the overlay video with the video's own sound,
- the overlay of every second as a gallery,
- for C3N, the cognitive consensus of every second (audio class, visual class, unified label),
- for AVSS models, the legend of the classes found.

The video goes through the same streaming pipeline as `avs-models predict` (in the precision, and
compiled or not, as `avs-models app --precision ... --compile` chose), and the model runs once per
video: the threshold and opacity sliders re-draw the overlays from the logits kept in the session.
Inputs a user can get wrong (not a video, no audio track, too short) answer with the command line's
one-line messages, in the page, and the app keeps serving.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

DEMO_MODEL_LABEL = "demo PCMANet (synthetic clips)"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
# Frames are kept and drawn at most this many pixels on their long side (memory and page size).
DISPLAY_SIDE = 640
EXAMPLE_SECONDS = 6
_EXAMPLE_SEEDS = (101, 202, 303)
_EXAMPLE_SCALE = 4  # example clips are drawn at the demo's 64 pixels and shown 4x larger
_THRESHOLD_HELP = "probability above which a pixel is foreground (binary models)"


# ------------------------------------------------------------------------------------ cache, models
def cache_dir() -> Path:
    """Where the app keeps the demo-trained model and its example clips: `$AVS_MODELS_CACHE`, else
    `$XDG_CACHE_HOME/avs-models`, else `~/.cache/avs-models`."""
    if os.environ.get("AVS_MODELS_CACHE"):
        return Path(os.environ["AVS_MODELS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "avs-models"


def demo_model_dir() -> Path:
    """The demo-trained PCMANet's folder in the cache (it may not exist yet: see `ensure_demo_model`)."""
    return cache_dir() / "demo" / "training" / "best"


_demo_lock = threading.Lock()


def ensure_demo_model() -> Path:
    """The demo-trained PCMANet, trained first if the cache has none: `avs-models demo` with its
    defaults (60 synthetic MS3 clips of 64x64 pixels, 30 epochs; a few minutes on 2 CPU cores).
    It trains in a hidden folder that is renamed when done, so an interrupted run leaves no model."""
    with _demo_lock:
        model_dir = demo_model_dir()
        if model_dir.is_dir():
            return model_dir
        from .demo import run_demo

        final = cache_dir() / "demo"
        staging = cache_dir() / ".demo-training"
        shutil.rmtree(staging, ignore_errors=True)
        run_demo(staging)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        return model_dir


def example_clips() -> list[Path]:
    """A few synthetic MS3-style clips with sound (several objects; which of them sound changes from
    second to second), written once to the cache: offline examples the demo model has never seen."""
    from .data.synthetic import SAMPLING_RATE, render_audio, render_frame, sample_scene, sample_sounding
    from .processing.visualization import AudioSource, Mp4Writer

    folder = cache_dir() / "examples"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in _EXAMPLE_SEEDS:
        path = folder / f"synthetic_{seed}.mp4"
        if not path.is_file():
            rng = np.random.default_rng(seed)
            scene = sample_scene(rng, EXAMPLE_SECONDS, num_objects=3, image_size=64)
            sounding = sample_sounding(rng, "multi", EXAMPLE_SECONDS, 3)
            audio = AudioSource(waveform=render_audio(scene, sounding, rng), sampling_rate=SAMPLING_RATE)
            temporary = path.with_name(f".{path.name}")
            writer = Mp4Writer(temporary, audio)
            for second in range(EXAMPLE_SECONDS):
                frame = render_frame(scene, second)[0]
                writer.add(frame.repeat(_EXAMPLE_SCALE, axis=0).repeat(_EXAMPLE_SCALE, axis=1))
            writer.close()
            os.replace(temporary, path)
        paths.append(path)
    return paths


_segmenters: dict[tuple[str, str], object] = {}
_segmenters_lock = threading.Lock()


def load_segmenter(model_dir: str, **inference):
    """The `audio-visual-segmentation` pipeline of `model_dir`, kept loaded for the next video (one
    model in memory at a time). `inference`: the options of `avs_models.optimize_for_inference`
    (`precision`, `compile`, ...) the pipeline takes. Errors are the command line's: a missing folder
    or `config.json`, options that do not suit the machine."""
    from transformers import pipeline

    from .commands.predict import check_model_dir
    from .processing.pipeline_audio_visual_segmentation import PIPELINE_TASK

    key = (model_dir, repr(sorted(inference.items())))
    with _segmenters_lock:
        if key not in _segmenters:
            check_model_dir(Path(model_dir))
            _segmenters.clear()
            _segmenters[key] = pipeline(PIPELINE_TASK, model=model_dir, **inference)
        return _segmenters[key]


# ---------------------------------------------------------------------------------------- segment
@dataclass
class Segmentation:
    """One video through one model, as the session keeps it: enough to draw the overlays again at
    any threshold and opacity without running the model."""

    video: str
    model_dir: str
    processor: object  # the model's AudioVisualProcessor, whose post-processing draws the masks
    model_type: str
    semantic: bool
    num_labels: int
    id2label: dict[int, str]
    frames: list[np.ndarray] = field(default_factory=list)  # upright RGB, at most DISPLAY_SIDE
    starts: list[float] = field(default_factory=list)
    # Binary models: each second's logits [h, w] at the model's size, in float32 as the pipeline has them.
    logits: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)  # semantic models: class ids at the frame's size
    consensus: list[dict] = field(
        default_factory=list
    )  # C3N: per second, audio/visual class and unified label
    output_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="avs-app-"))
    renders: int = 0


def _display_frame(frame: np.ndarray) -> np.ndarray:
    height, width = frame.shape[:2]
    scale = DISPLAY_SIDE / max(height, width)
    if scale >= 1:
        return frame
    size = (max(2, round(width * scale)), max(2, round(height * scale)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR))


def _c3n_class_names(config) -> tuple[list[str] | None, list[str] | None]:
    """Names of C3N's visual (ImageNet-1k) and audio (AudioSet) classes, as its consensus uses them."""
    from .models.label_names import AUDIOSET_CLASSES, IMAGENET_1K_CLASSES

    visual = config.visual_label_names or (
        list(IMAGENET_1K_CLASSES) if config.num_visual_classes == len(IMAGENET_1K_CLASSES) else None
    )
    audio = config.audio_label_names or (
        list(AUDIOSET_CLASSES) if config.num_audio_classes == len(AUDIOSET_CLASSES) else None
    )
    return visual, audio


def _named(names: list[str] | None, class_id: int) -> str:
    return names[class_id] if names is not None and class_id < len(names) else f"class {class_id}"


class _ForwardRecorder:
    """Keeps, per real frame of every clip the pipeline runs, what the page needs from the model's
    output beyond the masks: the logits (binary models) and C3N's consensus classes."""

    def __init__(self, model, semantic: bool):
        self.semantic = semantic
        self.c3n_names = _c3n_class_names(model.config) if model.config.model_type == "c3n" else None
        self.seconds: list[dict] = []

    def __call__(self, module, args, kwargs, output) -> None:
        frame_mask = kwargs["frame_mask"].bool().cpu()
        for clip, frame in torch.nonzero(frame_mask).tolist():
            second = {}
            if not self.semantic:
                second["logits"] = output.logits[clip, frame, 0].detach().float().cpu().numpy()
            if self.c3n_names is not None and output.unified_labels is not None:
                visual_names, audio_names = self.c3n_names
                top_audio = output.consensus_top_audio_classes
                top_visual = output.consensus_top_visual_classes
                second["consensus"] = {
                    "audio class": _named(audio_names, int(top_audio[clip, frame, 0]))
                    if top_audio is not None
                    else "",
                    "visual class": _named(visual_names, int(top_visual[clip, frame, 0]))
                    if top_visual is not None
                    else "",
                    "unified label": _named(visual_names, int(output.unified_labels[clip, frame])),
                }
            self.seconds.append(second)


def segment(video: str, model_dir: str, **inference) -> Segmentation:
    """Run the model of `model_dir` over `video` once, keeping what the sliders need to draw again.
    `inference`: `precision`, `compile`, ... of `avs_models.optimize_for_inference`."""
    from .models.labels import is_semantic_segmentation

    segmenter = load_segmenter(model_dir, **inference)
    model = segmenter.model
    config = model.config
    semantic = is_semantic_segmentation(config)
    result = Segmentation(
        video=video,
        model_dir=model_dir,
        processor=segmenter.processor,
        model_type=config.model_type,
        semantic=semantic,
        num_labels=config.num_labels,
        id2label={int(k): v for k, v in (config.id2label or {}).items()},
    )
    recorder = _ForwardRecorder(model, semantic)
    # C3N gives its consensus classes with output_attentions; the segmentation is the same.
    restore_attentions = config.output_attentions
    if config.model_type == "c3n":
        config.output_attentions = True
    # On the module the pipeline calls: a compiled or int8 program does not run the model's own hooks.
    handle = segmenter.inference_model.register_forward_hook(recorder, with_kwargs=True)
    try:
        for index, second in enumerate(segmenter.stream(video, return_frames=True, show_progress=True)):
            frame = _display_frame(second["frame"])
            result.frames.append(frame)
            result.starts.append(second["start"])
            extra = recorder.seconds[index]
            if semantic:
                result.masks.append(
                    np.asarray(
                        Image.fromarray(second["mask"]).resize(frame.shape[1::-1], Image.Resampling.NEAREST)
                    )
                )
            else:
                result.logits.append(extra["logits"])
            if "consensus" in extra:
                result.consensus.append(
                    {"second": index, "start (s)": round(second["start"], 2), **extra["consensus"]}
                )
    finally:
        handle.remove()
        config.output_attentions = restore_attentions
    return result


# ----------------------------------------------------------------------------------------- render
@dataclass
class Rendering:
    """What the page shows for one threshold and opacity."""

    video: str
    gallery: list[tuple[np.ndarray, str]]
    legend: list[tuple[str, tuple[int, int, int]]]


def render(result: Segmentation, threshold: float, alpha: float) -> Rendering:
    """Overlays of every second at `threshold` (binary models) and opacity `alpha`, as a gallery and an
    MP4 with the video's own sound (written next to the session's earlier renders, which it replaces)."""
    from .processing.visualization import (
        AudioSource,
        Mp4Writer,
        draw_legend,
        legend_entries,
        mask_palette,
        overlay_mask,
    )

    palette = mask_palette(result.num_labels)
    previous = sorted(Path(result.output_dir).glob("overlay_*.mp4"))
    result.renders += 1
    path = Path(result.output_dir) / f"overlay_{result.renders:04d}.mp4"
    writer = Mp4Writer(path, AudioSource(video=result.video, start_time=result.starts[0]))
    gallery, classes = [], {}
    for index, frame in enumerate(result.frames):
        mask = (
            result.masks[index]
            if result.semantic
            else _binary_mask(result.processor, result.logits[index], frame.shape[:2], threshold)
        )
        overlay = overlay_mask(frame, mask, alpha=alpha, palette=palette)
        if result.semantic:
            entries = legend_entries(mask, result.id2label, palette)  # classes present, by id
            classes.update(zip((int(c) for c in np.unique(mask) if c != 0), entries))
            overlay = draw_legend(overlay, entries)
        writer.add(overlay)
        foreground = float((mask > 0).mean())
        gallery.append((overlay, f"second {index}: {foreground:.0%} masked"))
    writer.close()
    for old in previous:
        old.unlink(missing_ok=True)
    legend = [(name, tuple(int(c) for c in colour)) for name, colour in (classes[k] for k in sorted(classes))]
    return Rendering(video=str(path), gallery=gallery, legend=legend)


def _binary_mask(processor, logits: np.ndarray, size: tuple[int, int], threshold: float) -> np.ndarray:
    """The processor's post-processing of one frame's logits `[h, w]`: resized to `size`, thresholded."""
    frame_logits = torch.from_numpy(logits.astype(np.float32))[None, None, None]
    sizes = torch.tensor([[list(size)]])
    return processor.post_process_masks(frame_logits, sizes, threshold=threshold, semantic=False)[0][0]


def legend_html(legend: list[tuple[str, tuple[int, int, int]]]) -> str:
    """The AVSS classes found in the video, each with its colour."""
    if not legend:
        return ""
    items = "".join(
        f'<span style="display:inline-block;margin:2px 10px 2px 0"><span style="display:inline-block;width:14px;'
        f'height:14px;background:rgb{colour};border:1px solid #444;vertical-align:middle"></span> {name}</span>'
        for name, colour in legend
    )
    return f"<div><b>Classes found:</b> {items}</div>"


# -------------------------------------------------------------------------------------------- page
def build_app(model_dirs: list[str] | None = None, **inference):
    """The Gradio page (`gr.Blocks`). `model_dirs` fill the model menu (the first is the default);
    without any, the demo-trained PCMANet is the default. Any other saved folder can be typed in.
    `inference`: how every model runs (`precision`, `compile`, ... of `avs_models.optimize_for_inference`)."""
    try:
        import gradio as gr
    except ImportError as error:
        raise ModuleNotFoundError(
            "the web demo needs gradio, which is not installed: pip install 'avs-models[app]'"
        ) from error

    from .cli import USER_ERRORS, one_line

    choices = [str(path) for path in model_dirs or []] or [DEMO_MODEL_LABEL]
    if DEMO_MODEL_LABEL not in choices:
        choices.append(DEMO_MODEL_LABEL)
    examples = [[str(path)] for path in example_clips()]

    def resolve_model(choice: str) -> str:
        choice = (choice or "").strip()
        return str(ensure_demo_model()) if choice in ("", DEMO_MODEL_LABEL) else choice

    def outputs_for(result: Segmentation | None, rendering: Rendering | None, status: str):
        consensus_visible = bool(result is not None and result.consensus)
        return (
            rendering.video if rendering else None,
            rendering.gallery if rendering else [],
            gr.update(
                value=[list(row.values()) for row in result.consensus] if consensus_visible else None,
                visible=consensus_visible,
            ),
            gr.update(
                value=legend_html(rendering.legend) if rendering else "",
                visible=bool(rendering and rendering.legend),
            ),
            gr.update(interactive=not (result is not None and result.semantic)),
            status,
        )

    def run(video, choice, threshold, alpha, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (Gradio's way to ask for a progress bar)
        if not video:
            return (
                None,
                *outputs_for(None, None, "Upload or record a video with sound, or pick an example."),
            )
        try:
            if (choice or DEMO_MODEL_LABEL) == DEMO_MODEL_LABEL and not demo_model_dir().is_dir():
                progress(0, desc=f"training the demo model once (a few minutes), cached in {cache_dir()}")
            model_dir = resolve_model(choice)
            progress(0, desc="segmenting")
            result = segment(video, model_dir, **inference)
            rendering = render(result, threshold, alpha)
        except USER_ERRORS as error:
            # The message names the upload as the user knows it, not the server's copy.
            message = one_line(error).replace(f"{Path(video).parent}{os.sep}", "")
            return (None, *outputs_for(None, None, f"**Error:** {message}"))
        seconds = len(result.frames)
        name = "the demo PCMANet" if choice in ("", None, DEMO_MODEL_LABEL) else f"`{Path(model_dir).name}`"
        status = f"{seconds} second{'s' if seconds != 1 else ''} segmented by {name} ({result.model_type})."
        return (result, *outputs_for(result, rendering, status))

    def redraw(result, threshold, alpha):
        if result is None:
            return outputs_for(None, None, "")
        try:
            rendering = render(result, threshold, alpha)
        except USER_ERRORS as error:
            return outputs_for(None, None, f"**Error:** {one_line(error)}")
        return outputs_for(
            result,
            rendering,
            f"Drawn again at threshold {threshold:.2f}, opacity {alpha:.2f} (the model did not run again).",
        )

    with gr.Blocks(title="avs-models: audio-visual segmentation", analytics_enabled=False) as app:
        gr.Markdown(
            "# Audio-visual segmentation\n"
            "Masks the objects that make the sound, one frame per second. Upload or record a video with "
            "sound, or pick an example clip (synthetic shapes with their own sounds)."
        )
        session = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                video_in = gr.Video(
                    label="Video with sound", sources=["upload", "webcam"], elem_id="video-in"
                )
                model_in = gr.Dropdown(
                    choices=choices,
                    value=choices[0],
                    allow_custom_value=True,
                    label="Model",
                    info="a saved model folder (type another path); the demo PCMANet is trained once, then cached",
                    elem_id="model-in",
                )
                threshold_in = gr.Slider(
                    0.01,
                    0.99,
                    value=0.5,
                    step=0.01,
                    label="Threshold",
                    info=_THRESHOLD_HELP,
                    elem_id="threshold",
                )
                alpha_in = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity", elem_id="opacity")
                run_button = gr.Button("Segment", variant="primary", elem_id="run")
                gr.Examples(examples=examples, inputs=[video_in], label="Example clips (made offline)")
            with gr.Column(scale=2):
                status_out = gr.Markdown(elem_id="status")
                video_out = gr.Video(
                    label="Overlay, with the video's sound",
                    elem_id="video-out",
                    interactive=False,
                    height=360,
                )
                legend_out = gr.HTML(visible=False, elem_id="legend")
                gallery_out = gr.Gallery(
                    label="Every second", columns=3, elem_id="gallery", interactive=False
                )
                consensus_out = gr.Dataframe(
                    headers=["second", "start (s)", "audio class", "visual class", "unified label"],
                    label="C3N cognitive consensus per second",
                    visible=False,
                    interactive=False,
                    elem_id="consensus",
                )
        page_outputs = [video_out, gallery_out, consensus_out, legend_out, threshold_in, status_out]
        run_button.click(run, [video_in, model_in, threshold_in, alpha_in], [session, *page_outputs])
        for slider in (threshold_in, alpha_in):
            slider.release(redraw, [session, threshold_in, alpha_in], page_outputs)
    return app


def launch(
    model_dirs: list[str] | None = None,
    host: str | None = DEFAULT_HOST,
    port: int | None = DEFAULT_PORT,
    share: bool = False,
    **inference,
) -> None:
    """Serve the page on `host:port` (127.0.0.1 by default: only this machine); `share=True` asks
    Gradio for a public link. `host=None` / `port=None` leave them to Gradio (and a Space's settings).
    `inference`: `precision`, `compile`, ... of `avs_models.optimize_for_inference`, for every model."""
    build_app(model_dirs, **inference).queue().launch(
        server_name=host, server_port=port, share=share, allowed_paths=[str(cache_dir())]
    )


__all__ = [
    "DEMO_MODEL_LABEL",
    "Rendering",
    "Segmentation",
    "build_app",
    "cache_dir",
    "demo_model_dir",
    "ensure_demo_model",
    "example_clips",
    "launch",
    "legend_html",
    "render",
    "segment",
]
