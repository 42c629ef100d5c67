"""Export AVSBench from the official layout to a Hub-format dataset (Parquet shards + README).

The result opens with the stock library, no code of ours needed:

    datasets.load_dataset(out_dir, "s4", split="test")

and the same folder pushed to a Hub dataset repository works with `load_dataset("org/name", "s4")`.
Examples come from `AVSBenchReader.iter_examples`, the generator the `datasets_scripts/avsbench`
builder also uses. They are written a row group at a time and shards roll over at
`max_shard_bytes`, so memory stays bounded however large the subset is.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .avsbench import HF_SPLIT_NAMES, SPLITS, SUBSETS, AVSBenchReader
from .avss_classes import avss_class_table

_SHARD_PATTERN = re.compile(r"^(train|validation|test)-(\d{5})-of-(\d{5})\.parquet$")


def export_avsbench(
    raw_dir: str | Path,
    out_dir: str | Path,
    subsets: tuple[str, ...] | list[str] = SUBSETS,
    *,
    max_shard_bytes: int = 256 * 1024 * 1024,
    rows_per_group: int = 16,
    load_official_log_mel: bool = False,
    progress: bool = True,
) -> dict[str, dict[str, int]]:
    """Write `out_dir/{subset}/{split}-XXXXX-of-YYYYY.parquet` and `out_dir/README.md`.

    Splits are named as `datasets` names them: train, validation (the release's "val") and test.

    Returns the number of videos written per subset and split. Subsets already exported in
    `out_dir` by an earlier call keep their shards and stay listed in the README.
    """
    for subset in subsets:
        if subset not in SUBSETS:
            raise ValueError(f"subsets must be taken from {SUBSETS}, got {subset!r}")
    if max_shard_bytes <= 0 or rows_per_group <= 0:
        raise ValueError("max_shard_bytes and rows_per_group must be positive")
    out_dir = Path(out_dir)
    counts: dict[str, dict[str, int]] = {}
    for subset in subsets:
        # The AVSS release has no log-mel pickles, so the opt-in only concerns S4 and MS3.
        reader = AVSBenchReader(
            raw_dir, subset, load_official_log_mel=load_official_log_mel and subset != "avss"
        )
        counts[subset] = {}
        for split in SPLITS:
            records = reader.records(split)
            if not records:
                continue
            counts[subset][HF_SPLIT_NAMES[split]] = _write_split(
                reader, split, out_dir / subset, max_shard_bytes, rows_per_group, progress
            )
    write_dataset_card(out_dir)
    return counts


def _write_split(
    reader: AVSBenchReader,
    split: str,
    folder: Path,
    max_shard_bytes: int,
    rows_per_group: int,
    progress: bool,
) -> int:
    records = reader.records(split)
    split_name = HF_SPLIT_NAMES[split]
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{split_name}-*.parquet"):
        old.unlink()
    # Encoding goes through the struct-audio features (datasets.Audio would need torchcodec);
    # the Parquet schema then declares the same column as Audio(decode=False).
    encoder = reader.features(audio_feature=False)
    schema = reader.features(audio_feature=True).arrow_schema
    examples = reader.iter_examples(split)
    if progress:
        from tqdm.auto import tqdm

        examples = tqdm(examples, total=len(records), desc=f"{reader.subset} {split_name}", unit="video")
    shard_paths: list[Path] = []
    writer, shard_bytes, rows, written = None, 0, [], 0

    def flush() -> None:
        nonlocal writer, shard_bytes, rows
        if not rows:
            return
        if writer is None:
            shard_paths.append(folder / f"{split_name}-{len(shard_paths):05d}.parquet.tmp")
            writer = pq.ParquetWriter(shard_paths[-1], schema)
        table = pa.Table.from_pylist(rows, schema=schema)
        writer.write_table(table)
        shard_bytes += table.nbytes
        rows = []
        if shard_bytes >= max_shard_bytes:
            writer.close()
            writer, shard_bytes = None, 0

    for _, example in examples:
        rows.append(encoder.encode_example(example))
        written += 1
        if len(rows) >= rows_per_group:
            flush()
    flush()
    if writer is not None:
        writer.close()
    for index, path in enumerate(shard_paths):
        path.rename(folder / f"{split_name}-{index:05d}-of-{len(shard_paths):05d}.parquet")
    return written


def _exported_configs(out_dir: Path) -> dict[str, list[str]]:
    configs = {}
    for subset in SUBSETS:
        folder = out_dir / subset
        splits = {m.group(1) for p in folder.glob("*.parquet") if (m := _SHARD_PATTERN.match(p.name))}
        if splits:
            configs[subset] = [name for name in HF_SPLIT_NAMES.values() if name in splits]
    return configs


_CARD_BODY = """
# AVSBench (audio-visual segmentation), Parquet export

This folder was written by `avs-models prepare-avsbench` from a local copy of AVSBench in its
official release layout. Load it with the stock `datasets` library:

```python
import datasets
test = datasets.load_dataset("{path_hint}", "s4", split="test")
```

## Configurations

| config | content |
|---|---|
| `s4` | AVSBench-object single-source: one sounding object, 5 frames; train videos have ground truth for frame 0 only |
| `ms3` | AVSBench-object multi-source: several sounding objects, 5 frames, all annotated |
| `avss` | AVSBench-semantic: label sets v1s, v1m (5 frames) and v2 (10 frames), 71 classes incl. background |

Present here: {present}.

## Fields

- `video_id` (string), `category` (S4/MS3 category, may be empty for MS3) or `label_set` (AVSS: v1s, v1m or v2)
- `frames`: list of T images, one per second (the release's PNG/JPEG files, unchanged)
- `audio`: the clip's wav file (`{{"bytes", "path"}}`, 16 kHz); declared as `Audio(decode=False)`.
  Decode it with `soundfile.read(io.BytesIO(example["audio"]["bytes"]))`, or cast the column
  to `datasets.Audio(sampling_rate=16000)` where torchcodec is installed
- `mask_frame_indices`: 0-based indices of the frames that have ground truth
- `masks` (S4/MS3): one single-channel PNG per annotated frame, 0 = background, 1 = sounding object
- `semantic_labels` (AVSS): one single-channel PNG per annotated frame holding class ids 0..70
  (0 = background), decoded from the release's colour label maps
- `official_log_mel` (only when exported with `--official-log-mel`): the release's log-mel
  examples, `[T, 1, 96, 64]` float32

## Licence

AVSBench belongs to its authors (OpenNLPLab). It must be obtained from them
(http://www.avlbench.opennlplab.cn/download) under their terms; do not redistribute this
export unless those terms allow it.

## Citation

Zhou et al., "Audio-Visual Segmentation", ECCV 2022; Zhou et al., "Audio-Visual Segmentation
with Semantics", IJCV 2024.
"""


def _avss_class_table() -> str:
    """The AVSS class ids of `semantic_labels`, their names and their colours in the release's `labels_rgb`."""
    rows = [f"| {class_id} | {name} | {color} |" for class_id, name, color in avss_class_table()]
    header = [
        "",
        "## AVSS classes",
        "",
        "`semantic_labels` holds these class ids; `labels_rgb` in the release paints them in these colours.",
        "",
        "| id | name | RGB |",
        "|---|---|---|",
    ]
    return "\n".join(header + rows) + "\n"


def write_dataset_card(out_dir: str | Path) -> Path:
    """(Re)write `out_dir/README.md` with a `configs:` block listing every exported subset and split."""
    out_dir = Path(out_dir)
    configs = _exported_configs(out_dir)
    lines = [
        "---",
        "license: other",
        "pretty_name: AVSBench",
        "task_categories:",
        "- image-segmentation",
        "configs:",
    ]
    for subset, splits in configs.items():
        lines += [f"- config_name: {subset}", "  data_files:"]
        lines += [f"  - split: {split}\n    path: {subset}/{split}-*.parquet" for split in splits]
    lines.append("---")
    present = (
        ", ".join(f"`{subset}` ({', '.join(splits)})" for subset, splits in configs.items()) or "nothing yet"
    )
    card = "\n".join(lines) + "\n" + _CARD_BODY.format(path_hint="path/to/this/folder", present=present)
    if "avss" in configs:
        card += _avss_class_table()
    path = out_dir / "README.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(card, encoding="utf-8")
    return path
