"""Export AVSBench from the official layout to a Hub-format dataset (Parquet shards + README).

The result opens with the stock library, no code of ours needed:

    datasets.load_dataset(out_dir, "s4", split="test")

and the same folder pushed to a Hub dataset repository works with `load_dataset("org/name", "s4")`.
Examples come from `AVSBenchReader.iter_examples`, the generator the `datasets_scripts/avsbench`
builder also uses, which checks every file it reads. They are written a row group at a time and
shards roll over at `max_shard_bytes`, so memory stays bounded however large the subset is.

The export is atomic: everything is written to a hidden folder next to `out_dir`
(`.NAME.partial-PID-XXXX`), which is renamed into place once complete. A failed export removes it;
a killed one leaves it behind, never a half-written `out_dir`, and the next export removes it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .avsbench import (
    FATAL_RULES,
    HF_SPLIT_NAMES,
    ON_ERROR_CHOICES,
    SPLITS,
    SUBSETS,
    AVSBenchReader,
    AVSBenchValidationError,
    SkippedVideo,
    metadata_path,
)
from .avss_classes import avss_class_table

logger = logging.getLogger(__name__)

_SHARD_PATTERN = re.compile(r"^(train|validation|test)-(\d{5})-of-(\d{5})\.parquet$")
REPORT_JSON = "preparation_report.json"
REPORT_MARKDOWN = "preparation_report.md"
# What an export folder holds; anything else in an existing `out_dir` stops the export.
_EXPORT_ENTRIES = {"README.md", REPORT_JSON, REPORT_MARKDOWN, *SUBSETS}


@dataclass
class SubsetReport:
    """How one subset's metadata rows were accounted for: `metadata_rows` equals the rows written
    (by split, named as `datasets` names them) plus the rows in `skipped`. `unlisted` names the
    video folders on disk that no metadata row lists (not exported, as in the official loaders)."""

    on_error: str
    metadata_file: str
    metadata_rows: int
    written: dict[str, int]
    skipped: list[SkippedVideo] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> SubsetReport:
        return cls(**{**data, "skipped": [SkippedVideo(**row) for row in data["skipped"]]})


@dataclass
class PreparationReport:
    """What `export_avsbench` wrote and what it left out, per subset; saved as `preparation_report.json`
    (this structure) and `preparation_report.md` (the tables) in the export."""

    subsets: dict[str, SubsetReport] = field(default_factory=dict)

    @property
    def written(self) -> dict[str, dict[str, int]]:
        """Rows written per subset and split, e.g. `{"s4": {"train": 9, "validation": 2, "test": 2}}`."""
        return {subset: dict(report.written) for subset, report in self.subsets.items()}

    def to_json(self) -> str:
        return json.dumps(
            {"subsets": {name: asdict(report) for name, report in self.subsets.items()}}, indent=1
        )

    @classmethod
    def from_json(cls, text: str) -> PreparationReport:
        data = json.loads(text)
        return cls({name: SubsetReport.from_dict(report) for name, report in data["subsets"].items()})

    def summary_table(self) -> str:
        """Markdown: rows in and out per subset and split, then the skipped videos counted by rule."""
        splits = list(HF_SPLIT_NAMES.values())
        lines = [
            "| config | metadata rows | " + " | ".join(splits) + " | skipped |",
            "| --- | ---: |" + " ---: |" * len(splits) + " ---: |",
        ]
        for name, report in self.subsets.items():
            counts = " | ".join(str(report.written.get(split, 0)) for split in splits)
            lines.append(f"| {name} | {report.metadata_rows} | {counts} | {len(report.skipped)} |")
        for name, report in self.subsets.items():
            if report.unlisted:
                lines.append(
                    f"\n{name}: {len(report.unlisted)} video folder(s) on disk are in no metadata row and were "
                    f"not exported, e.g. {report.unlisted[0]}"
                )
        by_rule = Counter((name, row.rule) for name, report in self.subsets.items() for row in report.skipped)
        if by_rule:
            lines += ["", "| config | rule | skipped videos |", "| --- | --- | ---: |"]
            lines += [f"| {name} | {rule} | {count} |" for (name, rule), count in sorted(by_rule.items())]
        return "\n".join(lines) + "\n"

    def skipped_table(self) -> str:
        """Markdown: every skipped metadata row or video, with the rule it broke and why."""
        lines = [
            "| config | split | line | video | rule | file | reason |",
            "| --- | --- | ---: | --- | --- | --- | --- |",
        ]
        for name, report in self.subsets.items():
            for row in report.skipped:
                cells = (name, row.split, str(row.line), row.video_id, row.rule, row.file, row.reason)
                lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        return "\n".join(lines) + "\n"

    def to_markdown(self) -> str:
        text = "# AVSBench preparation report\n\n" + self.summary_table()
        if any(report.skipped for report in self.subsets.values()):
            text += "\n## Skipped\n\n" + self.skipped_table()
        unlisted = [(name, folder) for name, report in self.subsets.items() for folder in report.unlisted]
        if unlisted:
            text += "\n## Video folders in no metadata row\n\n" + "".join(
                f"- {name}: {folder}\n" for name, folder in unlisted
            )
        return text


def export_avsbench(
    raw_dir: str | Path,
    out_dir: str | Path,
    subsets: tuple[str, ...] | list[str] = SUBSETS,
    *,
    on_error: str = "raise",
    max_shard_bytes: int = 256 * 1024 * 1024,
    rows_per_group: int = 16,
    load_official_log_mel: bool = False,
    progress: bool = True,
) -> PreparationReport:
    """Write `out_dir/{subset}/{split}-XXXXX-of-YYYYY.parquet`, `out_dir/README.md` and the report.

    Splits are named as `datasets` names them: train, validation (the release's "val") and test.
    Every file is checked as it is read (see `AVSBenchReader`). With `on_error="raise"` (default)
    the first metadata row or video that breaks a rule stops the export with an
    `AVSBenchValidationError` naming the file and the rule; with `on_error="skip"` such rows and
    videos are left out and listed, with the reason, in `preparation_report.json` / `.md`, and the
    dataset card says how many were skipped. Each split must keep at least one video.

    `out_dir` must be new, empty, or an earlier export: subsets exported there before and not
    exported again are kept. The folder is replaced as a whole once everything is written, so a
    failed or killed export never leaves a partial dataset in `out_dir`.

    Returns the `PreparationReport` (`report.written` gives the rows per subset and split).
    """
    for subset in subsets:
        if subset not in SUBSETS:
            raise ValueError(f"subsets must be taken from {SUBSETS}, got {subset!r}")
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    if max_shard_bytes <= 0 or rows_per_group <= 0:
        raise ValueError("max_shard_bytes and rows_per_group must be positive")
    out_dir = Path(out_dir)
    previous = _previous_report(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-{os.getpid()}-", dir=out_dir.parent))
    try:
        with _skip_hint(on_error):
            # Every metadata file is read and checked before anything is written.
            readers = {
                subset: AVSBenchReader(
                    raw_dir,
                    subset,
                    on_error=on_error,
                    # The AVSS release has no log-mel pickles, so the opt-in only concerns S4 and MS3.
                    load_official_log_mel=load_official_log_mel and subset != "avss",
                )
                for subset in subsets
            }
            for reader in readers.values():
                reader.require_every_split()
            from tqdm.auto import tqdm

            total = sum(len(reader.records(split)) for reader in readers.values() for split in SPLITS)
            with tqdm(total=total, unit="video", disable=not progress, desc="prepare-avsbench") as bar:
                exported = {
                    subset: _export_subset(reader, staging / subset, max_shard_bytes, rows_per_group, bar)
                    for subset, reader in readers.items()
                }
        # Subsets of an earlier export that were not exported again are kept (hard links, no copy).
        for subset in SUBSETS:
            if subset not in exported and (out_dir / subset).is_dir():
                _link_folder(out_dir / subset, staging / subset)
                if subset in previous.subsets:
                    exported[subset] = previous.subsets[subset]
        report = PreparationReport({subset: exported[subset] for subset in SUBSETS if subset in exported})
        (staging / REPORT_JSON).write_text(report.to_json(), encoding="utf-8")
        (staging / REPORT_MARKDOWN).write_text(report.to_markdown(), encoding="utf-8")
        write_dataset_card(staging, report)
        _move_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


@contextmanager
def _skip_hint(on_error: str):
    """Under on_error="raise", a problem with one row or video says how to skip it instead."""
    try:
        yield
    except AVSBenchValidationError as error:
        if on_error == "raise" and error.rule not in FATAL_RULES:
            error.hint = (
                "Fix it, or pass on_error='skip' (prepare-avsbench --on-error skip) to leave out such "
                "videos and list them in a report"
            )
        raise


def _export_subset(
    reader: AVSBenchReader, folder: Path, max_shard_bytes: int, rows_per_group: int, bar
) -> SubsetReport:
    csv_path = metadata_path(reader.subset_dir, reader.subset)
    written = {}
    for split in SPLITS:
        count = _write_split(reader, split, folder, max_shard_bytes, rows_per_group, bar)
        if count == 0:
            rules = Counter(row.rule for row in reader.skipped if row.split == split)
            raise AVSBenchValidationError(
                f"every video of split {split!r} was skipped ("
                + ", ".join(f"{count} {rule}" for rule, count in rules.most_common())
                + "); nothing is left to export for it",
                rule="empty-split",
                path=csv_path,
            )
        written[HF_SPLIT_NAMES[split]] = count
    report = SubsetReport(
        reader.on_error,
        reader.relative_path(csv_path),
        reader.metadata_rows,
        written,
        list(reader.skipped),
        reader.unlisted_videos(),
    )
    if report.unlisted:
        logger.warning(
            "%s: %d video folder(s) on disk are in no row of %s and were not exported (listed in %s)",
            reader.subset,
            len(report.unlisted),
            report.metadata_file,
            REPORT_MARKDOWN,
        )
    if report.metadata_rows != sum(written.values()) + len(report.skipped):
        raise RuntimeError(
            f"{reader.subset}: {report.metadata_rows} metadata rows but {written} written "
            f"and {len(report.skipped)} skipped"
        )
    return report


def _write_split(
    reader: AVSBenchReader, split: str, folder: Path, max_shard_bytes: int, rows_per_group: int, bar
) -> int:
    split_name = HF_SPLIT_NAMES[split]
    folder.mkdir(parents=True, exist_ok=True)
    bar.set_description(f"{reader.subset} {split_name}")
    # Encoding goes through the struct-audio features (datasets.Audio would need torchcodec);
    # the Parquet schema then declares the same column as Audio(decode=False).
    encoder = reader.features(audio_feature=False)
    schema = reader.features(audio_feature=True).arrow_schema
    shard_paths: list[Path] = []
    writer, shard_bytes, rows, written, shown = None, 0, [], 0, 0
    skipped_before = len(reader.skipped)

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

    def advance() -> None:
        """Move the bar to the videos read so far, skipped ones included."""
        nonlocal shown
        read = written + len(reader.skipped) - skipped_before
        bar.update(read - shown)
        shown = read
        if reader.skipped:
            bar.set_postfix(skipped=len(reader.skipped), refresh=False)

    for _, example in reader.iter_examples(split):
        rows.append(encoder.encode_example(example))
        written += 1
        advance()
        if len(rows) >= rows_per_group:
            flush()
    flush()
    advance()
    if writer is not None:
        writer.close()
    # Shard names carry the shard count, known only now.
    for index, path in enumerate(shard_paths):
        path.rename(folder / f"{split_name}-{index:05d}-of-{len(shard_paths):05d}.parquet")
    return written


def _previous_report(out_dir: Path) -> PreparationReport:
    """The report of the export already in `out_dir` (empty if none); refuses a folder that is not an export."""
    if not out_dir.exists():
        return PreparationReport()
    if not out_dir.is_dir():
        raise FileExistsError(
            f"{out_dir} exists and is not a folder; give a new or empty folder for the export"
        )
    foreign = [
        entry.name
        for entry in out_dir.iterdir()
        if entry.name not in _EXPORT_ENTRIES
        or (
            entry.name in SUBSETS
            and not (entry.is_dir() and all(_SHARD_PATTERN.match(f.name) for f in entry.iterdir()))
        )
    ]
    if foreign:
        shown = ", ".join(sorted(foreign)[:3]) + (", ..." if len(foreign) > 3 else "")
        raise FileExistsError(
            f"{out_dir} holds {shown}, which is not part of an AVSBench export; the export replaces the "
            "folder as a whole, so give a new or empty folder (or an earlier export)"
        )
    try:
        return PreparationReport.from_json((out_dir / REPORT_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return PreparationReport()


def _remove_abandoned_staging(out_dir: Path) -> None:
    """Remove the staging folders of earlier exports to `out_dir` whose process is gone (killed)."""
    for kind in ("partial", "old"):
        prefix = f".{out_dir.name}.{kind}-"
        for entry in out_dir.parent.iterdir():
            pid = entry.name[len(prefix) :].split("-", 1)[0]
            if entry.name.startswith(prefix) and pid.isdigit() and not _process_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _link_folder(source: Path, target: Path) -> None:
    target.mkdir()
    for path in source.iterdir():
        try:
            os.link(path, target / path.name)
        except OSError:
            shutil.copy2(path, target / path.name)


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename the finished `staging` folder to `out_dir`, replacing an earlier export there."""
    if out_dir.exists() and any(out_dir.iterdir()):
        retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-{os.getpid()}-", dir=out_dir.parent))
        os.replace(out_dir, retired / out_dir.name)
        os.replace(staging, out_dir)
        shutil.rmtree(retired)
    else:
        os.replace(staging, out_dir)


@dataclass(frozen=True)
class _SplitFiles:
    """One exported split as its Parquet footers describe it."""

    num_examples: int
    num_bytes: int  # uncompressed (Arrow) size of its rows
    file_bytes: int  # size of its shards on disk


def _exported_configs(out_dir: Path) -> dict[str, dict[str, _SplitFiles]]:
    """The subsets and splits present in `out_dir`, with their row counts and sizes from the shards."""
    configs = {}
    for subset in SUBSETS:
        shards: dict[str, list[Path]] = {}
        for path in sorted((out_dir / subset).glob("*.parquet")):
            if match := _SHARD_PATTERN.match(path.name):
                shards.setdefault(match.group(1), []).append(path)
        splits = {}
        for split in HF_SPLIT_NAMES.values():
            if split in shards:
                footers = [pq.ParquetFile(path).metadata for path in shards[split]]
                splits[split] = _SplitFiles(
                    num_examples=sum(footer.num_rows for footer in footers),
                    num_bytes=sum(
                        footer.row_group(index).total_byte_size
                        for footer in footers
                        for index in range(footer.num_row_groups)
                    ),
                    file_bytes=sum(path.stat().st_size for path in shards[split]),
                )
        if splits:
            configs[subset] = splits
    return configs


def _dataset_info_yaml(configs: dict[str, dict[str, _SplitFiles]]) -> list[str]:
    """The card's `dataset_info` block: rows and sizes per config and split.

    `datasets` keys its cache of a local folder on the folder's name and this card, not on the
    files, so without these numbers a re-export to the same path (or another export in a folder
    of the same name) would load the rows cached from the earlier one. With them, a changed
    export gets its own cache, and `load_dataset` checks each split's row count against the card.
    """
    lines = ["dataset_info:"]
    for subset, splits in configs.items():
        lines += [f"- config_name: {subset}", "  splits:"]
        for split, files in splits.items():
            lines += [
                f"  - name: {split}",
                f"    num_bytes: {files.num_bytes}",
                f"    num_examples: {files.num_examples}",
            ]
        lines += [
            f"  download_size: {sum(files.file_bytes for files in splits.values())}",
            f"  dataset_size: {sum(files.num_bytes for files in splits.values())}",
        ]
    return lines


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


def _preparation_section(report: PreparationReport) -> str:
    """How many metadata rows each subset had, how many were exported and how many skipped."""
    skipped = sum(len(subset.skipped) for subset in report.subsets.values())
    summary = (
        f"{skipped} metadata row(s) or video(s) broke a rule and were skipped (`--on-error skip`); "
        f"`{REPORT_MARKDOWN}` lists each with the reason."
        if skipped
        else "Nothing was skipped."
    )
    return (
        "\n## Preparation\n\nEvery frame, mask and wav was checked while preparing (sizes, binary masks, "
        f"palette colours, audio length, unique rows). {summary}\n\n" + report.summary_table()
    )


def write_dataset_card(out_dir: str | Path, report: PreparationReport | None = None) -> Path:
    """(Re)write `out_dir/README.md` with a `configs:` block listing every exported subset and split.

    The card's "Preparation" section gives the rows in and out (and how many were skipped) per
    subset, from `report` or else from the folder's `preparation_report.json`.
    """
    out_dir = Path(out_dir)
    configs = _exported_configs(out_dir)
    if report is None and (out_dir / REPORT_JSON).is_file():
        report = PreparationReport.from_json((out_dir / REPORT_JSON).read_text(encoding="utf-8"))
    lines = [
        "---",
        "license: other",
        "pretty_name: AVSBench",
        "task_categories:",
        "- image-segmentation",
        *(_dataset_info_yaml(configs) if configs else []),
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
    if report is not None and report.subsets:
        card += _preparation_section(report)
    if "avss" in configs:
        card += _avss_class_table()
    path = out_dir / "README.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(card, encoding="utf-8")
    return path
