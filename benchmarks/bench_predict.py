"""End-to-end benchmark of `avs-models predict` against the model forward alone, and its peak memory on
short and long videos.

In one run, on a 10 s 640x360 clip with sound (made here with PyAV) and a PCMANet-R50 with a VGGish
audio encoder (random weights: speed does not depend on them):

- `predict` end to end (the model loading it does on every run is measured and subtracted), and the model forward alone on the same clips
  (`batch_size` clips at a time, as predict runs them), so the ratio of the two is the overhead of
  everything around the model; the target is at most 1.3x;
- a breakdown: decoding (one pass over the file), preprocessing (resizing, log-mels), forward, and
  writing (mask PNGs, overlays, GIF, MP4 with the original audio), each timed on its own;
- the peak memory (max RSS) of `predict` on 60 s and on 5 minutes of 1280x720 video, each in a fresh
  process; the target is the long one within 1.5x of the short one.

    python benchmarks/bench_predict.py --json predict.json --markdown predict.md
    python benchmarks/bench_predict.py --model tiny --clip-seconds 3 --clip-size 64x36 \\
        --memory-seconds 4 8 --memory-size 96x64          # a quick smoke run

Timings are medians of `--runs` runs (predict and forward interleaved). Set OMP_NUM_THREADS on a
shared machine (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from bench_inference import processor_name  # benchmarks/ is on sys.path when run as a script

TIMED_PARTS = (
    "predict",
    "model_loading",
    "predict_without_loading",
    "forward",
    "decode",
    "preprocess_without_decode",
    "write",
)


def make_video(path: Path, seconds: float, width: int, height: int, fps: int = 30, rate: int = 44100) -> Path:
    """A clip of a moving square on a moving gradient (so H.264 has real work) with a stereo tone."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "veryfast"}
        audio = container.add_stream("aac", rate=rate, layout="stereo")
        rows, columns = np.mgrid[0:height, 0:width]
        for index in range(round(seconds * fps)):
            image = np.empty((height, width, 3), dtype=np.uint8)
            image[..., 0] = (columns + 3 * index) % 256
            image[..., 1] = (rows + 2 * index) % 256
            image[..., 2] = 96
            side = max(4, height // 4)
            left = (7 * index) % max(1, width - side)
            image[height // 3 : height // 3 + side, left : left + side] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        time_axis = np.arange(round(seconds * rate)) / rate
        wave = (0.3 * np.sin(2 * np.pi * 440 * time_axis)).astype(np.float32)
        for start in range(0, len(wave), 1024):
            block = np.stack([wave[start : start + 1024]] * 2)
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    return path


def save_model(folder: Path, size: str, image_size: int) -> None:
    from avs_models import (
        AudioVisualImageProcessor,
        AudioVisualProcessor,
        PCMANetConfig,
        PCMANetForAudioVisualSegmentation,
    )
    from avs_models.models.backbones import resnet50_backbone_config
    from avs_models.models.vggish import VGGishFeatureExtractor

    if size == "full":
        config = PCMANetConfig(
            backbone_config=resnet50_backbone_config(), avga_groups=4, audio_config={"model_type": "vggish"}
        )
    else:
        config = PCMANetConfig(
            backbone_config=resnet50_backbone_config(
                embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]
            ),
            hidden_size=16,
            avga_groups=4,
            qsca_num_heads=2,
            qsca_head_dim=8,
            qsca_pool_sizes=[4, 2, 1, 1],
            audio_config={"model_type": "vggish", "stage_channels": [[4], [8]], "hidden_sizes": [16]},
        )
    torch.manual_seed(0)
    PCMANetForAudioVisualSegmentation(config).eval().save_pretrained(folder)
    AudioVisualProcessor(
        AudioVisualImageProcessor(size=image_size), VGGishFeatureExtractor()
    ).save_pretrained(folder)


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def breakdown(model_dir: Path, video: Path, out_dir: Path, batch_size: int, runs: int) -> dict:
    from transformers import pipeline

    from avs_models.cli import main as cli_main
    from avs_models.processing import VideoReader
    from avs_models.processing.pipeline_audio_visual_segmentation import PIPELINE_TASK
    from avs_models.processing.visualization import AudioSource, GifWriter, Mp4Writer, overlay_mask

    load_seconds, segmenter = timed(lambda: pipeline(PIPELINE_TASK, model=str(model_dir)))
    processor, model = segmenter.processor, segmenter.model
    audio_key = processor.feature_extractor.model_input_names[0]

    def decode():
        return sum(
            len(window.frames)
            for window in VideoReader(video, processor.frame_time).windows(processor.num_frames)
        )

    def preprocess():
        return [window for window in processor.iter_clips(video, return_frames=True)]

    windows = preprocess()
    pixel_values = torch.cat([window["pixel_values"] for window in windows])
    audio_inputs = torch.cat([window[audio_key] for window in windows])
    frame_mask = torch.cat([window["frame_mask"] for window in windows])

    @torch.no_grad()
    def forward():
        for start in range(0, len(pixel_values), batch_size):
            model(
                pixel_values=pixel_values[start : start + batch_size],
                **{audio_key: audio_inputs[start : start + batch_size]},
                frame_mask=frame_mask[start : start + batch_size],
            )

    seconds = list(segmenter.stream(str(video), batch_size=batch_size, return_frames=True))

    def write():
        from PIL import Image

        target = out_dir / "write"
        target.mkdir(parents=True, exist_ok=True)
        gif = GifWriter(target / "overlay.gif")
        mp4 = Mp4Writer(target / "overlay.mp4", AudioSource(video=video, start_time=seconds[0]["start"]))
        for index, second in enumerate(seconds):
            Image.fromarray(second["mask"] * 255).save(target / f"mask_{index:04d}.png")
            overlay = overlay_mask(second["frame"], second["mask"])
            Image.fromarray(overlay).save(target / f"frame_{index:04d}.png")
            gif.add(overlay)
            mp4.add(overlay)
        gif.close()
        mp4.close()

    def predict():
        argv = [
            "predict",
            str(model_dir),
            str(video),
            "--out",
            str(out_dir / "predict"),
            "--batch-size",
            str(batch_size),
            "--overwrite",
        ]
        assert cli_main(argv) == 0

    timings = {name: [] for name in ("predict", "forward", "decode", "preprocess", "write")}
    functions = {
        "predict": predict,
        "forward": forward,
        "decode": decode,
        "preprocess": preprocess,
        "write": write,
    }
    for function in functions.values():
        function()  # warm-up
    for _ in range(runs):
        for name, function in functions.items():
            timings[name].append(timed(function)[0])
    medians = {name: statistics.median(values) for name, values in timings.items()}
    medians["preprocess_without_decode"] = max(0.0, medians["preprocess"] - medians["decode"])
    medians["model_loading"] = load_seconds
    # The command loads the model on every run; the target compares the work on the video.
    medians["predict_without_loading"] = max(0.0, medians["predict"] - load_seconds)
    medians["predict_over_forward"] = medians["predict_without_loading"] / medians["forward"]
    medians["num_seconds"] = len(seconds)
    return medians


def peak_memory_mib(model_dir: Path, video: Path, out_dir: Path, batch_size: int) -> float:
    """Max RSS (MiB) of `avs-models predict` on `video`, in a fresh process."""
    code = (
        "import resource, sys\n"
        "from avs_models.cli import main\n"
        f"assert main(['predict', {str(model_dir)!r}, {str(video)!r}, '--out', {str(out_dir)!r}, "
        f"'--batch-size', '{batch_size}', '--overwrite']) == 0\n"
        "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = next(line for line in result.stdout.splitlines() if line.startswith("PEAK_KIB"))
    return int(line.split()[1]) / 1024


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(part) for part in text.lower().split("x"))
    return width, height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("full", "tiny"), default="full", help="PCMANet-R50 or a tiny one")
    parser.add_argument("--image-size", type=int, default=224, help="model input size (default 224)")
    parser.add_argument(
        "--clip-seconds", type=float, default=10.0, help="length of the timed clip (default 10)"
    )
    parser.add_argument("--clip-size", default="640x360", help="WxH of the timed clip (default 640x360)")
    parser.add_argument(
        "--memory-seconds", type=float, nargs=2, default=[60.0, 300.0], help="short and long video (s)"
    )
    parser.add_argument(
        "--memory-size", default="1280x720", help="WxH of the memory videos (default 1280x720)"
    )
    parser.add_argument("--batch-size", type=int, default=4, help="clips per forward pass (default 4)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs (default 3)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--markdown", help="also write the tables to this Markdown file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        save_model(work / "model", args.model, args.image_size)
        clip = make_video(work / "clip.mp4", args.clip_seconds, *parse_size(args.clip_size))
        results = {
            "machine": f"{processor_name()}, {torch.get_num_threads()} torch threads",
            "model": args.model,
            "clip": f"{args.clip_seconds:g} s {args.clip_size}",
            "timings_s": breakdown(work / "model", clip, work / "out", args.batch_size, args.runs),
            "peak_memory_mib": {},
        }
        for seconds in args.memory_seconds:
            video = make_video(work / f"memory_{seconds:g}.mp4", seconds, *parse_size(args.memory_size))
            results["peak_memory_mib"][f"{seconds:g} s {args.memory_size}"] = peak_memory_mib(
                work / "model", video, work / f"memory_out_{seconds:g}", args.batch_size
            )
            video.unlink()
    short, long = results["peak_memory_mib"].values()
    results["long_over_short_memory"] = long / short

    timings = results["timings_s"]
    lines = [
        (f"`predict` on a {results['clip']} clip ({timings['num_seconds']} masks), {results['model']} PCMANet-R50, "
        f"{results['machine']}"),
        "",
        "| part | seconds |",
        "| --- | --- |",
        *(f"| {name.replace('_', ' ')} | {timings[name]:.3f} |" for name in TIMED_PARTS),
        f"| predict without loading / forward | {timings['predict_over_forward']:.2f}x |",
        "",
        "| video | peak memory (MiB) |",
        "| --- | --- |",
        *(f"| {name} | {value:.0f} |" for name, value in results["peak_memory_mib"].items()),
        f"| long / short | {results['long_over_short_memory']:.2f}x |",
    ]
    print(json.dumps(results, indent=1))
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.markdown:
        Path(args.markdown).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
