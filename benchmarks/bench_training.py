"""Training input benchmark: how fast the trainer's data loader delivers clips, against the time
of one training step, with and without DataLoader worker processes.

The trainer loads and collates each batch (PNG and WAV decoding, resizing, VGGish log-mel) while
the model trains on the previous one only when the loader has workers; with `num_workers=0` the
two run in series. Prints, as JSON and a Markdown table, for a preset's model at full size (or
the demo's small PCMANet with `--small`): clips per second of the prepared training loader for
each worker count, the median training step (forward, backward, optimiser) on one batch, and the
share of a step that loading one batch takes (above 1: the loader cannot keep up).

    python benchmarks/bench_training.py --preset pcmanet_s4 --videos 16 --batch-size 2 --workers 0 2 4
    python benchmarks/bench_training.py --small --image-size 64 --videos 8 --steps 2   # smoke test

The synthetic clips are written at `--image-size` in the official layout.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from bench_inference import machine_info, write_report  # benchmarks/ is on sys.path

from avs_models.data import make_synthetic_avsbench
from avs_models.demo import small_pcmanet
from avs_models.training import Trainer, load_training_config


def loader_clips_per_second(trainer: Trainer, batches: int) -> float:
    """Clips per second the prepared training loader yields (its worker processes already started)."""
    iterator = iter(trainer.train_loader)
    next(iterator)  # worker start-up and the first batch are not the steady state
    clips, start = 0, time.perf_counter()
    for _, batch in zip(range(batches), iterator):
        clips += batch["pixel_values"].shape[0]
    return clips / (time.perf_counter() - start)


def step_seconds(trainer: Trainer, steps: int) -> float:
    """Median time of forward, backward and optimiser step on one batch held in memory."""
    batch = next(iter(trainer.train_loader))
    trainer.model.train()
    timings = []
    for _ in range(steps + 1):  # the first step warms up
        start = time.perf_counter()
        outputs = trainer.model(**batch)
        trainer.accelerator.backward(outputs.loss)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
        timings.append(time.perf_counter() - start)
    return sorted(timings[1:])[len(timings[1:]) // 2]


def measure(args, data_dir: Path, work: Path) -> dict:
    overrides = [
        f"data_dir={data_dir}",
        f"output_dir={work / 'run'}",
        f"batch_size={args.batch_size}",
        f"image_size={args.image_size}",
        "validation_split=null",
    ]
    rows, step = [], None
    for workers in args.workers:
        config = load_training_config(args.preset, [*overrides, f"num_workers={workers}"])
        if args.small:
            config.model = small_pcmanet()
        trainer = Trainer(config)
        if step is None:
            step = step_seconds(trainer, args.steps)
        clips_per_second = loader_clips_per_second(trainer, args.loader_batches)
        rows.append(
            {
                "num_workers": workers,
                "loader_clips_per_second": clips_per_second,
                "load_share_of_step": args.batch_size / clips_per_second / step,
            }
        )
    return {
        "preset": args.preset,
        "model": "small PCMANet (demo)" if args.small else args.preset,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "step_seconds": step,
        "loaders": rows,
    }


def to_markdown(result: dict, machine: dict) -> str:
    size = f"{result['image_size']}x{result['image_size']}"
    lines = [
        (
            f"{result['model']}, batch {result['batch_size']} at {size}, {machine['threads']} threads, "
            f"{machine['processor']}, torch {machine['torch']}; training step {result['step_seconds']:.3f} s."
        ),
        "",
        "| workers | loader (clips/s) | loading one batch / training step |",
        "| --- | --- | --- |",
    ]
    for row in result["loaders"]:
        lines.append(
            f"| {row['num_workers']} | {row['loader_clips_per_second']:.1f} | {row['load_share_of_step']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="pcmanet_s4", help="training preset (default pcmanet_s4)")
    parser.add_argument(
        "--small", action="store_true", help="the demo's small PCMANet instead of the preset's model"
    )
    parser.add_argument("--videos", type=int, default=16, help="synthetic videos (default 16)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="worker counts to compare")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (median)")
    parser.add_argument("--loader-batches", type=int, default=4, help="timed loader batches")
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--markdown", help="write the Markdown table to this file")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    subset = load_training_config(args.preset).subset
    with tempfile.TemporaryDirectory() as work:
        data_dir = Path(work) / "data"
        make_synthetic_avsbench(data_dir, subset, args.videos, seed=0, image_size=args.image_size)
        result = measure(args, data_dir, Path(work))
    machine = machine_info()
    write_report(
        {"machine": machine, "result": result}, to_markdown(result, machine), args.json, args.markdown
    )


if __name__ == "__main__":
    main()
