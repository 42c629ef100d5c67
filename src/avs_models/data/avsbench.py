"""Reading AVSBench (S4, MS3, AVSS) from the official release layout.

`data_dir` is the folder of one subset, or the `avsbench_data` folder that holds all three:

```
Single-source/                      (S4; the subset folder itself may be given as data_dir)
  s4_meta_data.csv                  columns: name, start, category, split
  s4_data/visual_frames/{split}/{category}/{name}/{name}_{1..5}.png
  s4_data/audio_wav/{split}/{category}/{name}.wav
  s4_data/audio_log_mel/{split}/{category}/{name}.pkl       (pickled tensors, opt-in only)
  s4_data/gt_masks/{split}/{category}/{name}/{name}_{k}.png (train: k=1 only; val/test: 1..5)
Multi-sources/                      (MS3)
  ms3_meta_data.csv                 first column: video id; column `split`
  ms3_data/visual_frames/{name}/{name}.mp4_{1..5}.png
  ms3_data/audio_wav/{split}/{name}.wav
  ms3_data/audio_log_mel/{split}/{name}.pkl
  ms3_data/gt_masks/{split}/{name}/{name}_{1..5}.png
AVSS/                               (AVSBench-semantic: v1s, v1m and v2 clips)
  metadata.csv                      columns used: uid, label (v1s/v1m/v2), split
  {label}/{uid}/frames/{0..T-1}.jpg                 (T = 5 for v1s/v1m, 10 for v2)
  {label}/{uid}/labels_rgb/{t}.png                  (colour label maps, see avss_classes)
  {label}/{uid}/audio.wav
```

Every example holds the original frame and wav bytes unchanged, the ground truth decoded into
single-channel PNG images (S4/MS3: 0 = background, 1 = sounding object, from masks of 0/255 or
0/1; AVSS: class ids decoded from `labels_rgb` with the AVSS palette), and the 0-based indices of
the frames those label images belong to. Every file is checked as it is read (see
`AVSBenchReader`); a file that breaks a rule raises `AVSBenchValidationError` naming the file and
the rule, or, under `on_error="skip"`, leaves its video out and lists it in the reader's `skipped`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image, UnidentifiedImageError

from .avss_classes import AVSS_CLASS_NAMES, avss_palette, color_mask_to_class_ids

logger = logging.getLogger(__name__)

SUBSETS = ("s4", "ms3", "avss")
SPLITS = ("train", "val", "test")
# `datasets` names the release's "val" split "validation".
HF_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}
AVSS_LABEL_SETS = ("v1s", "v1m", "v2")
NUM_FRAMES = {"s4": 5, "ms3": 5, "v1s": 5, "v1m": 5, "v2": 10}


def frames_per_clip(subset: str) -> int:
    """Frames in a batch's clips: 5 for S4 and MS3; 10 for AVSS, whose 5-frame clips are padded."""
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    return NUM_FRAMES["v2"] if subset == "avss" else NUM_FRAMES[subset]


# The 23 categories of the official S4 release.
S4_CATEGORIES = (
    "baby_laughter",
    "female_singing",
    "male_speech",
    "dog_barking",
    "cat_meowing",
    "lions_roaring",
    "horse_clip-clop",
    "coyote_howling",
    "mynah_bird_singing",
    "playing_acoustic_guitar",
    "playing_tabla",
    "playing_violin",
    "playing_piano",
    "playing_ukulele",
    "playing_glockenspiel",
    "helicopter",
    "race_car",
    "driving_buses",
    "ambulance_siren",
    "typing_on_computer_keyboard",
    "chainsawing_trees",
    "cap_gun_shooting",
    "lawn_mowing",
)
# The object kinds drawn by `avs_models.data.synthetic`, which writes them as S4/MS3 categories.
SYNTHETIC_CATEGORIES = (
    "synthetic-low-hum",
    "synthetic-high-tone",
    "synthetic-major-chord",
    "synthetic-minor-chord",
    "synthetic-noise-low",
    "synthetic-noise-high",
    "synthetic-beeps",
    "synthetic-chirp",
)

_SUBSET_FOLDERS = {"s4": "Single-source", "ms3": "Multi-sources", "avss": "AVSS"}
_METADATA_FILES = {"s4": "s4_meta_data.csv", "ms3": "ms3_meta_data.csv", "avss": "metadata.csv"}


class AVSBenchValidationError(ValueError):
    """A file or metadata row breaks a rule of the official layout.

    `rule` names the rule (e.g. "mask-size", "audio-length"; docs/data.md lists them all), `path`
    the offending file, and `video_id`, `split`, `line` the metadata row when the problem belongs
    to one video. `str(error)` is one line: the file, the problem, the rule and the video.
    Only `problem` is positional, so the error pickles and can be re-raised from a worker process.
    """

    def __init__(
        self,
        problem: str,
        *,
        rule: str | None = None,
        path: Path | None = None,
        video_id: str | None = None,
        split: str | None = None,
        line: int | None = None,
        subset: str | None = None,
    ) -> None:
        super().__init__(problem)
        self.problem, self.rule, self.path = problem, rule, path
        self.video_id, self.split, self.line, self.subset = video_id, split, line, subset
        # What the user can do about it; the exporter adds the `on_error="skip"` way out.
        self.hint = ""

    def __str__(self) -> str:
        context = [f"rule {self.rule}"] if self.rule else []
        if self.video_id is not None:
            where = " ".join(part for part in (self.subset, self.split) if part)
            context.append(f"video {self.video_id!r}, {where}, metadata line {self.line}")
        message = f"{self.problem} ({'; '.join(context)})" if context else self.problem
        if self.path is not None:
            message = f"{self.path}: {message}"
        return f"{message}. {self.hint}" if self.hint else message


class AVSBenchMissingFileError(AVSBenchValidationError, FileNotFoundError):
    """A file the official layout puts at `path` is not there (rule "missing-file")."""


class AVSBenchMetadataError(AVSBenchValidationError):
    """The metadata csv is empty, lacks a column, or has a row that cannot be used."""


@dataclass(frozen=True)
class SkippedVideo:
    """A metadata row left out under `on_error="skip"`, and why.

    `file` is relative to the folder holding the subset folder (e.g.
    "Multi-sources/ms3_data/gt_masks/train/v/v_1.png"), or the metadata file for row problems.
    """

    video_id: str
    split: str
    line: int
    rule: str
    file: str
    reason: str


@dataclass(frozen=True)
class VideoRecord:
    """One metadata row: `group` is the S4/MS3 category ("" when MS3 has none) or the AVSS label set."""

    video_id: str
    split: str
    group: str
    line: int


def resolve_subset_dir(data_dir: str | Path, subset: str) -> Path:
    """The folder holding `subset`'s metadata file: `data_dir` itself or its official sub-folder."""
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    data_dir = Path(data_dir)
    for candidate in (data_dir, data_dir / _SUBSET_FOLDERS[subset]):
        if (candidate / _METADATA_FILES[subset]).is_file():
            return candidate
    raise FileNotFoundError(
        f"no {_METADATA_FILES[subset]} in {data_dir} or {data_dir / _SUBSET_FOLDERS[subset]} "
        f"(expected the official AVSBench {subset} layout)"
    )


def metadata_path(subset_dir: Path, subset: str) -> Path:
    return Path(subset_dir) / _METADATA_FILES[subset]


def frame_paths(subset_dir: Path, subset: str, record: VideoRecord) -> list[Path]:
    subset_dir, name = Path(subset_dir), record.video_id
    if subset == "s4":
        folder = subset_dir / "s4_data" / "visual_frames" / record.split / record.group / name
        return [folder / f"{name}_{t}.png" for t in range(1, 6)]
    if subset == "ms3":
        folder = subset_dir / "ms3_data" / "visual_frames" / name
        return [folder / f"{name}.mp4_{t}.png" for t in range(1, 6)]
    folder = subset_dir / record.group / name / "frames"
    return [folder / f"{t}.jpg" for t in range(NUM_FRAMES[record.group])]


def mask_paths(subset_dir: Path, subset: str, record: VideoRecord) -> dict[int, Path]:
    """Ground-truth label images by 0-based frame index."""
    subset_dir, name = Path(subset_dir), record.video_id
    if subset == "s4":
        folder = subset_dir / "s4_data" / "gt_masks" / record.split / record.group / name
        count = 1 if record.split == "train" else 5
        return {t: folder / f"{name}_{t + 1}.png" for t in range(count)}
    if subset == "ms3":
        folder = subset_dir / "ms3_data" / "gt_masks" / record.split / name
        return {t: folder / f"{name}_{t + 1}.png" for t in range(5)}
    folder = subset_dir / record.group / name / "labels_rgb"
    # v1s training clips are annotated on their first frame only; every other clip on all frames.
    count = 1 if (record.group == "v1s" and record.split == "train") else NUM_FRAMES[record.group]
    return {t: folder / f"{t}.png" for t in range(count)}


def _object_audio_path(subset_dir: Path, subset: str, record: VideoRecord, folder: str, suffix: str) -> Path:
    """`s4_data/<folder>/<split>/<category>/<id><suffix>` or `ms3_data/<folder>/<split>/<id><suffix>`."""
    split_dir = Path(subset_dir) / f"{subset}_data" / folder / record.split
    if subset == "s4":
        split_dir = split_dir / record.group
    return split_dir / f"{record.video_id}{suffix}"


def wav_path(subset_dir: Path, subset: str, record: VideoRecord) -> Path:
    if subset in ("s4", "ms3"):
        return _object_audio_path(subset_dir, subset, record, "audio_wav", ".wav")
    return Path(subset_dir) / record.group / record.video_id / "audio.wav"


def log_mel_path(subset_dir: Path, subset: str, record: VideoRecord) -> Path:
    if subset in ("s4", "ms3"):
        return _object_audio_path(subset_dir, subset, record, "audio_log_mel", ".pkl")
    raise ValueError("the AVSS release has no precomputed log-mel files; compute them from audio.wav")


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Unpickles a pickled torch tensor and nothing else.

    A pickled tensor refers to exactly three globals; its storage bytes are read back with
    `torch.load(weights_only=True)` instead of torch's own unrestricted loader.
    """

    def find_class(self, module: str, name: str):
        import torch

        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return torch._utils._rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            from collections import OrderedDict

            return OrderedDict
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return lambda data: torch.load(io.BytesIO(data), weights_only=True)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only pickled tensors are allowed")


def load_official_log_mel(path: str | Path) -> np.ndarray:
    """Read an official `.pkl` log-mel file (a pickled `[T, 1, 96, 64]` tensor) as float32 numpy.

    Only tensor data is accepted: any other object in the pickle raises `pickle.UnpicklingError`.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing official log-mel file {path}")
    with open(path, "rb") as handle:
        value = _TensorOnlyUnpickler(handle).load()
    if not isinstance(value, torch.Tensor) or value.ndim != 4 or tuple(value.shape[1:]) != (1, 96, 64):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{path}: expected a log-mel tensor of shape [T, 1, 96, 64], got {shape}")
    return value.detach().to(torch.float32).numpy()


# PIL modes of 8-bit images. Frames are converted to RGB (as the official loaders do), so any of
# these except 1-bit works; ground-truth images may be 1-bit too.
IMAGE_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")
FRAME_MODES = tuple(mode for mode in IMAGE_MODES if mode != "1")


def decode_binary_mask(image: Image.Image) -> np.ndarray:
    """S4/MS3 ground truth as a uint8 `[H, W]` array of 0 (background) and 1 (sounding object).

    Accepted: a 1-bit image; or a grey image (grey, palette or RGB whose colours are all grey) whose
    levels are 0 and 255 (the release's encoding) or 0 and 1. Anything else raises `ValueError`:
    other grey levels (a 0/100 mask, the soft edges of a resized mask), a mix of 1 and 255, colours.
    """
    if image.mode not in IMAGE_MODES:
        raise ValueError(
            f"has PIL mode {image.mode!r}; a mask must be an 8-bit image ({', '.join(IMAGE_MODES)})"
        )
    if image.mode == "1":
        return np.asarray(image, dtype=np.uint8)
    if image.mode in ("L", "LA"):
        grey = np.asarray(image.getchannel(0))
    else:
        rgb = np.asarray(image.convert("RGB"))
        grey = rgb[..., 0]
        if not ((grey == rgb[..., 1]) & (grey == rgb[..., 2])).all():
            colours = np.unique(
                rgb.reshape(-1, 3)[(rgb.reshape(-1, 3) != grey.reshape(-1, 1)).any(1)], axis=0
            )
            shown = ", ".join(str(tuple(int(v) for v in colour)) for colour in colours[:3])
            raise ValueError(
                f"is not binary: it has colours that are not grey ({shown}{', ...' if len(colours) > 3 else ''})"
            )
    levels = set(np.unique(grey).tolist())
    if levels <= {0, 255}:
        return (grey == 255).astype(np.uint8)
    if levels <= {0, 1}:
        return grey.astype(np.uint8)
    shown = sorted(levels)
    listed = ", ".join(map(str, shown[:6])) + (", ..." if len(shown) > 6 else "")
    raise ValueError(f"is not binary: its grey levels are {listed} (accepted: 0 and 255, or 0 and 1)")


def decode_wav(audio: dict | bytes | str | Path) -> tuple[np.ndarray, int]:
    """Decode a wav (an example's `audio` field, bytes or a path) into float32 mono samples and the rate."""
    if isinstance(audio, dict):
        audio = audio["bytes"] if audio.get("bytes") is not None else audio["path"]
    source = io.BytesIO(audio) if isinstance(audio, (bytes, bytearray)) else str(audio)
    samples, sampling_rate = soundfile.read(source, dtype="float32", always_2d=True)
    return samples.mean(axis=1), int(sampling_rate)


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def avsbench_features(subset: str, *, audio_feature: bool = False, with_official_log_mel: bool = False):
    """The `datasets.Features` of an AVSBench example.

    `audio` is a `{"bytes", "path"}` struct holding the wav file. With `audio_feature=True` it is
    declared as `datasets.Audio(sampling_rate=16000, decode=False)` (same storage), which the
    Parquet export uses so the Hub viewer plays it; the builder keeps the plain struct because
    encoding through `datasets.Audio` needs torchcodec.
    """
    import datasets

    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    audio = (
        datasets.Audio(sampling_rate=16000, decode=False)
        if audio_feature
        else {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    )
    fields = {"video_id": datasets.Value("string")}
    if subset == "avss":
        fields["label_set"] = datasets.Value("string")
    else:
        fields["category"] = datasets.Value("string")
    fields["frames"] = datasets.List(datasets.Image())
    fields["audio"] = audio
    fields["mask_frame_indices"] = datasets.List(datasets.Value("int32"))
    fields["semantic_labels" if subset == "avss" else "masks"] = datasets.List(datasets.Image())
    if with_official_log_mel:
        fields["official_log_mel"] = datasets.Array4D(shape=(None, 1, 96, 64), dtype="float32")
    return datasets.Features(fields)


ON_ERROR_CHOICES = ("raise", "skip")
# Problems with the whole subset rather than one row or video: nothing can be skipped to get past them.
FATAL_RULES = frozenset(
    {"metadata-encoding", "metadata-empty", "metadata-columns", "label-index", "empty-split"}
)


class AVSBenchReader:
    """Reads one AVSBench subset from the official folder layout, checking every file it reads.

    Args:
        data_dir: the subset folder (holding its metadata csv) or the folder above it.
        subset: "s4", "ms3" or "avss".
        known_categories: S4/MS3 categories accepted in the metadata; defaults to the official
            S4 categories plus the synthetic generator's kinds. MS3 rows may have no category.
        on_error: "raise" (default) raises `AVSBenchValidationError` at the first metadata row or
            video that breaks a rule, naming the file and the rule; "skip" leaves such rows and
            videos out and lists them in `skipped` (`SkippedVideo`: video, line, rule, file, reason).
        load_official_log_mel: opt in to reading the official pickled log-mel files (tensors
            only, see `load_official_log_mel`) into an `official_log_mel` field. Off by default:
            pickles are never opened unless asked for by this name.

    The rules (docs/data.md lists them with their messages): the metadata has the needed columns,
    known splits, categories and label sets, and each video once; each file is there and decodes
    (every image is read and decoded once); a video's frames share one size and its ground truth
    has that size; S4/MS3 masks are binary; AVSS label colours are in the palette; the wav is
    complete and lasts the clip's length give or take one second (one frame's worth of audio).
    """

    def __init__(
        self,
        data_dir: str | Path,
        subset: str,
        *,
        known_categories: tuple[str, ...] | None = None,
        on_error: str = "raise",
        load_official_log_mel: bool = False,
    ) -> None:
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
        if load_official_log_mel and subset == "avss":
            raise ValueError("load_official_log_mel: the AVSS release has no log-mel pickles")
        self.subset_dir = resolve_subset_dir(data_dir, subset)
        self.subset = subset
        self.known_categories = set(known_categories or S4_CATEGORIES + SYNTHETIC_CATEGORIES)
        self.on_error = on_error
        self.load_official_log_mel = load_official_log_mel
        self._palette = avss_palette()
        # Rows and videos left out under on_error="skip", in the order they were found.
        self.skipped: list[SkippedVideo] = []
        # Data rows of the metadata file (blank lines aside): each is read or ends up in `skipped`.
        self.metadata_rows = 0
        self._records = self._read_metadata()
        if subset == "avss":
            self._check_label_index()

    def features(self, *, audio_feature: bool = False):
        return avsbench_features(
            self.subset, audio_feature=audio_feature, with_official_log_mel=self.load_official_log_mel
        )

    def records(self, split: str) -> list[VideoRecord]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return [record for record in self._records if record.split == split]

    def require_every_split(self) -> None:
        """Raise `AVSBenchValidationError` (rule "empty-split") if train, val or test has no usable video."""
        for split in SPLITS:
            if not self.records(split):
                raise AVSBenchValidationError(
                    f"lists no usable videos for split {split!r} (AVSBench has train, val and test)",
                    rule="empty-split",
                    path=metadata_path(self.subset_dir, self.subset),
                )

    def unlisted_videos(self) -> list[str]:
        """Video folders on disk that no metadata row names, relative as in `relative_path`.

        The official loaders ignore them too, so they are reported, not refused: a cut-off or
        hand-edited metadata file would otherwise drop videos without a word.
        """
        if self.subset == "s4":
            folders = (self.subset_dir / "s4_data" / "visual_frames").glob("*/*/*")
        elif self.subset == "ms3":
            folders = (self.subset_dir / "ms3_data" / "visual_frames").glob("*")
        else:
            folders = (path for label in AVSS_LABEL_SETS for path in (self.subset_dir / label).glob("*"))
        return sorted(
            self.relative_path(folder)
            for folder in folders
            if folder.is_dir() and folder.name not in self._listed_ids
        )

    def relative_path(self, path: Path) -> str:
        """`path` relative to the folder holding the subset folder, as the skip report names files."""
        try:
            return Path(path).relative_to(self.subset_dir.parent).as_posix()
        except ValueError:
            return str(path)

    # Metadata

    def _read_metadata(self) -> list[VideoRecord]:
        path = metadata_path(self.subset_dir, self.subset)
        try:
            # utf-8-sig: spreadsheet programs start the file with a byte-order mark.
            with open(path, newline="", encoding="utf-8-sig") as handle:
                reader = csv.reader(handle)
                rows = [(reader.line_num, fields) for fields in reader if any(f.strip() for f in fields)]
        except UnicodeDecodeError as error:
            raise AVSBenchMetadataError(
                f"is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8 csv",
                rule="metadata-encoding",
                path=path,
            ) from None
        if len(rows) < 2:
            raise AVSBenchMetadataError("has no video rows", rule="metadata-empty", path=path)
        header = [name.strip() for name in rows[0][1]]
        id_column = "uid" if self.subset == "avss" else header[0]
        group_column = {"s4": "category", "ms3": "category", "avss": "label"}[self.subset]
        required = [id_column, "split"] + ([group_column] if self.subset != "ms3" else [])
        if missing := [name for name in required if name not in header]:
            raise AVSBenchMetadataError(
                f"lacks the column(s) {missing}; it has {header}", rule="metadata-columns", path=path
            )
        self.metadata_rows = len(rows) - 1
        id_index = header.index(id_column)
        self._listed_ids = {fields[id_index].strip() for _, fields in rows[1:] if len(fields) > id_index}
        records, first_rows, conflicting = [], {}, {}
        for line, fields in rows[1:]:
            if len(fields) != len(header):
                self._reject_row(
                    path,
                    line,
                    "",
                    "",
                    "metadata-row",
                    f"has {len(fields)} fields, the header has {len(header)}",
                )
                continue
            row = dict(zip(header, (field.strip() for field in fields)))
            record = VideoRecord(
                video_id=row[id_column], split=row["split"], group=row.get(group_column, ""), line=line
            )
            if problem := self._row_problem(record):
                self._reject_row(path, line, record.video_id, record.split, "metadata-row", problem)
                continue
            first = first_rows.get(record.video_id)
            if first is None:
                first_rows[record.video_id] = record
                records.append(record)
            elif (first.split, first.group) == (record.split, record.group):
                self._reject_row(
                    path, line, record.video_id, record.split, "duplicate-row", f"repeats line {first.line}"
                )
            else:
                problem = f"lists the video again as {self._placement(record)}; line {first.line} has {self._placement(first)}"
                self._reject_row(path, line, record.video_id, record.split, "duplicate-row", problem)
                conflicting.setdefault(first.line, record)
        # A video listed in two places is left out everywhere: neither row can be trusted.
        for first in [record for record in records if record.line in conflicting]:
            again = conflicting[first.line]
            problem = f"is listed again at line {again.line} as {self._placement(again)}"
            self._reject_row(path, first.line, first.video_id, first.split, "duplicate-row", problem)
        return [record for record in records if record.line not in conflicting]

    def _placement(self, record: VideoRecord) -> str:
        name = "label set" if self.subset == "avss" else "category"
        return f"split {record.split!r}" + (f", {name} {record.group!r}" if record.group else "")

    def _reject_row(self, path: Path, line: int, video_id: str, split: str, rule: str, problem: str) -> None:
        problem = f"line {line}" + (f" (video {video_id!r})" if video_id else "") + f" {problem}"
        if self.on_error == "raise":
            raise AVSBenchMetadataError(problem, rule=rule, path=path)
        self.skipped.append(SkippedVideo(video_id, split, line, rule, self.relative_path(path), problem))
        logger.info("skipped %s: %s (rule %s)", self.relative_path(path), problem, rule)

    def _row_problem(self, record: VideoRecord) -> str | None:
        if not record.video_id:
            return "has an empty video id"
        if record.split not in SPLITS:
            return f"has the unknown split {record.split!r} (expected one of {', '.join(SPLITS)})"
        if self.subset == "avss" and record.group not in AVSS_LABEL_SETS:
            return (
                f"has the unknown label set {record.group!r} (expected one of {', '.join(AVSS_LABEL_SETS)})"
            )
        if self.subset == "s4" and record.group not in self.known_categories:
            return f"has the unknown category {record.group!r}"
        if self.subset == "ms3" and record.group and record.group not in self.known_categories:
            return f"has the unknown category {record.group!r}"
        return None

    def _check_label_index(self) -> None:
        """The release's `label2idx.json`, when present, must list the 71 known classes in id order."""
        path = self.subset_dir / "label2idx.json"
        if not path.is_file():
            return
        try:
            label_to_index = json.loads(path.read_text(encoding="utf-8"))
            names = tuple(sorted(label_to_index, key=label_to_index.get))
        except (ValueError, TypeError, AttributeError) as error:
            raise AVSBenchMetadataError(
                f"is not a JSON object of class names to ids ({error})", rule="label-index", path=path
            ) from None
        if names != AVSS_CLASS_NAMES:
            raise AVSBenchMetadataError(
                f"does not list the {len(AVSS_CLASS_NAMES)} AVSS classes in the expected order "
                "(background, accordion, ..., woman); class ids would be decoded wrongly",
                rule="label-index",
                path=path,
            )

    # Videos

    def iter_examples(self, split: str, *, decode_images: bool = False) -> Iterator[tuple[str, dict]]:
        """`(key, example)` pairs of one split, in metadata order.

        Under `on_error="skip"` a video that breaks a rule is left out and added to `skipped`.
        """
        for record in self.records(split):
            try:
                example = self.read_example(record, decode_images=decode_images)
            except AVSBenchValidationError as error:
                if self.on_error == "raise":
                    raise
                path = self.relative_path(error.path) if error.path is not None else ""
                self.skipped.append(
                    SkippedVideo(record.video_id, record.split, record.line, error.rule, path, error.problem)
                )
                logger.info("skipped video %r: %s", record.video_id, error)
                continue
            yield record.video_id, example

    def read_example(self, record: VideoRecord, *, decode_images: bool = False) -> dict:
        """Read and check one video; raises `AVSBenchValidationError` naming the file and the rule.

        Images come as `{"bytes", "path"}` dicts (the files' bytes, ground truth as one-channel
        PNG), which `datasets.Image` stores. `decode_images=True` gives the PIL images decoded
        while checking them instead (ground truth as "L" images), so that a collator fed straight
        from the reader decodes nothing a second time.
        """
        frames, frame_size = [], None
        paths = frame_paths(self.subset_dir, self.subset, record)
        if self.subset == "avss":
            self._check_frame_count(record, paths)
        for path in paths:
            data = self._read_file(path, record, "frame")
            image = self._decode_image(path, data, record, "frame", FRAME_MODES)
            if frame_size is None:
                frame_size = image.size
            elif image.size != frame_size:
                raise self._error(
                    record,
                    path,
                    "frame-size",
                    f"frame is {_size(image.size)} but the video's first frame {paths[0].name} is {_size(frame_size)} (width x height)",
                )
            frames.append(image if decode_images else {"bytes": data, "path": path.name})
        what = "labels_rgb label map" if self.subset == "avss" else "ground-truth mask"
        labels, indices = [], []
        for index, path in mask_paths(self.subset_dir, self.subset, record).items():
            image = self._decode_image(path, self._read_file(path, record, what), record, what, IMAGE_MODES)
            if image.size != frame_size:
                raise self._error(
                    record,
                    path,
                    "mask-size",
                    f"{what} is {_size(image.size)} but the video's frames are {_size(frame_size)} (width x height)",
                )
            label = (
                self._class_ids(path, image, record)
                if self.subset == "avss"
                else self._binary_mask(path, image, record)
            )
            labels.append(
                Image.fromarray(label) if decode_images else {"bytes": _png_bytes(label), "path": path.name}
            )
            indices.append(index)
        example = {"video_id": record.video_id}
        if self.subset == "avss":
            example["label_set"] = record.group
        else:
            example["category"] = record.group
        example["frames"] = frames
        example["audio"] = self._read_wav(wav_path(self.subset_dir, self.subset, record), record, len(paths))
        example["mask_frame_indices"] = indices
        example["semantic_labels" if self.subset == "avss" else "masks"] = labels
        if self.load_official_log_mel:
            example["official_log_mel"] = self._read_log_mel(record)
        return example

    def _error(self, record: VideoRecord, path: Path, rule: str, problem: str, kind=AVSBenchValidationError):
        return kind(
            problem,
            rule=rule,
            path=path,
            video_id=record.video_id,
            split=record.split,
            line=record.line,
            subset=self.subset,
        )

    def _read_file(self, path: Path, record: VideoRecord, what: str) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise self._error(
                record, path, "missing-file", f"missing {what}", AVSBenchMissingFileError
            ) from None
        except OSError as error:
            raise self._error(
                record, path, "unreadable-file", f"cannot read the {what}: {error.strerror or error}"
            ) from None

    def _decode_image(self, path: Path, data: bytes, record: VideoRecord, what: str, modes) -> Image.Image:
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except UnidentifiedImageError:
            problem = f"unreadable {what}: not an image format Pillow recognises"
            raise self._error(record, path, "unreadable-image", problem) from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise self._error(record, path, "unreadable-image", f"unreadable {what}: {error}") from None
        if image.mode not in modes:
            raise self._error(
                record,
                path,
                "image-mode",
                f"{what} has PIL mode {image.mode!r}; expected an 8-bit image of mode {', '.join(modes)}",
            )
        return image

    def _check_frame_count(self, record: VideoRecord, paths: list[Path]) -> None:
        """AVSS clip lengths come from the label set; the official loader counts the frame files, so they must agree."""
        folder = paths[0].parent
        if not folder.is_dir():
            return  # reading the first frame reports the missing file
        found = len(list(folder.glob("*.jpg")))
        if found != len(paths):
            problem = f"frames folder holds {found} .jpg files; a {record.group} clip has {len(paths)} (0.jpg to {paths[-1].name})"
            raise self._error(record, folder, "frame-count", problem)

    def _binary_mask(self, path: Path, image: Image.Image, record: VideoRecord) -> np.ndarray:
        try:
            return decode_binary_mask(image)
        except ValueError as error:
            raise self._error(record, path, "mask-not-binary", f"ground-truth mask {error}") from None

    def _class_ids(self, path: Path, image: Image.Image, record: VideoRecord) -> np.ndarray:
        """AVSS class ids from a colour label map; every colour must be one of the palette's."""
        rgb = np.asarray(image.convert("RGB"))
        packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
        colours, inverse = np.unique(packed, return_inverse=True)
        unpacked = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=-1).astype(np.uint8)
        class_ids = color_mask_to_class_ids(unpacked[None], self._palette)[0]
        unknown = np.flatnonzero((class_ids == 0) & (colours != 0))
        if unknown.size:
            counts = np.bincount(inverse.ravel(), minlength=colours.size)[unknown]
            order = np.argsort(-counts)
            shown = ", ".join(
                f"{tuple(int(v) for v in unpacked[unknown[i]])} at {counts[i]} pixels" for i in order[:3]
            )
            more = f" and {unknown.size - 3} more" if unknown.size > 3 else ""
            problem = (
                f"labels_rgb label map has colours outside the AVSS palette: {shown}{more} "
                "(the official loader would read them as background)"
            )
            raise self._error(record, path, "label-colour", problem)
        return class_ids[inverse].reshape(packed.shape).astype(np.uint8)

    def _read_wav(self, path: Path, record: VideoRecord, num_frames: int) -> dict:
        data = self._read_file(path, record, "wav file")
        try:
            samples, sampling_rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
            reason = (getattr(error, "error_string", None) or str(error)).rstrip(".")
            raise self._error(record, path, "unreadable-wav", f"unreadable wav file: {reason}") from None
        length = samples.shape[0]
        if length == 0:
            raise self._error(record, path, "audio-length", "wav file holds no samples")
        declared = _declared_wav_frames(data)
        if declared is not None and declared > length:
            problem = (
                f"wav file is truncated: its header declares {declared / sampling_rate:.2f} s of audio "
                f"but the file holds {length / sampling_rate:.2f} s"
            )
            raise self._error(record, path, "wav-truncated", problem)
        seconds = length / sampling_rate
        if abs(seconds - num_frames) > 1:
            problem = (
                f"audio lasts {seconds:.2f} s; a {num_frames}-frame clip needs {num_frames} s "
                "give or take 1 s (one frame's worth of audio)"
            )
            raise self._error(record, path, "audio-length", problem)
        if not np.isfinite(samples).all():
            raise self._error(record, path, "audio-non-finite", "wav file holds NaN or infinite samples")
        return {"bytes": data, "path": path.name}

    def _read_log_mel(self, record: VideoRecord) -> np.ndarray:
        path = log_mel_path(self.subset_dir, self.subset, record)
        try:
            return load_official_log_mel(path)
        except FileNotFoundError:
            raise self._error(
                record, path, "missing-file", "missing official log-mel file", AVSBenchMissingFileError
            ) from None
        except (pickle.UnpicklingError, ValueError, EOFError) as error:
            problem = str(error).removeprefix(f"{path}: ")
            raise self._error(record, path, "log-mel", f"unusable official log-mel file: {problem}") from None


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _declared_wav_frames(data: bytes) -> int | None:
    """Sample frames the `data` chunk of a RIFF/WAVE file declares; None for other formats and for
    streamed wavs, whose writers leave the size unset (0 or 0xFFFFFFFF). libsndfile reads a
    truncated file without complaint, so this is how a cut-off copy is caught."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset, block_align = 12, 0
    while offset + 8 <= len(data):
        chunk, size = data[offset : offset + 4], int.from_bytes(data[offset + 4 : offset + 8], "little")
        if chunk == b"fmt " and offset + 22 <= len(data):
            block_align = int.from_bytes(data[offset + 20 : offset + 22], "little")
        elif chunk == b"data":
            return size // block_align if block_align and size not in (0, 0xFFFFFFFF) else None
        offset += 8 + size + (size & 1)
    return None


__all__ = [
    "AVSS_CLASS_NAMES",
    "AVSS_LABEL_SETS",
    "FATAL_RULES",
    "HF_SPLIT_NAMES",
    "ON_ERROR_CHOICES",
    "S4_CATEGORIES",
    "SPLITS",
    "SUBSETS",
    "SYNTHETIC_CATEGORIES",
    "AVSBenchMetadataError",
    "AVSBenchMissingFileError",
    "AVSBenchReader",
    "AVSBenchValidationError",
    "SkippedVideo",
    "VideoRecord",
    "avsbench_features",
    "decode_binary_mask",
    "decode_wav",
    "frames_per_clip",
    "load_official_log_mel",
    "resolve_subset_dir",
]
