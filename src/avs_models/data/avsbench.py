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
single-channel PNG images (S4/MS3: 0 = background, 1 = sounding object, a pixel counting as
foreground when its grey level is at least 128; AVSS: class ids decoded from `labels_rgb` with
the AVSS palette, unknown colours becoming background, as the official loader does), and the
0-based indices of the frames those label images belong to.
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


class AVSBenchMetadataError(ValueError):
    """A metadata row names an unknown split, category or label set."""


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


def decode_binary_mask(image: Image.Image) -> np.ndarray:
    """S4/MS3 ground truth as a uint8 `[H, W]` array of 0 (background) and 1 (sounding object)."""
    return (np.asarray(image.convert("L")) >= 128).astype(np.uint8)


def decode_wav(audio: dict | bytes | str | Path) -> tuple[np.ndarray, int]:
    """Decode a wav (an example's `audio` field, bytes or a path) into float32 mono samples and the rate."""
    if isinstance(audio, dict):
        audio = audio["bytes"] if audio.get("bytes") is not None else audio["path"]
    source = io.BytesIO(audio) if isinstance(audio, (bytes, bytearray)) else str(audio)
    samples, sampling_rate = soundfile.read(source, dtype="float32", always_2d=True)
    return samples.mean(axis=1), int(sampling_rate)


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG")
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


class AVSBenchReader:
    """Reads one AVSBench subset from the official folder layout.

    Args:
        data_dir: the subset folder (holding its metadata csv) or the folder above it.
        subset: "s4", "ms3" or "avss".
        known_categories: S4/MS3 categories accepted in the metadata; defaults to the official
            S4 categories plus the synthetic generator's kinds. MS3 rows may have no category.
        on_bad_row: "error" raises `AVSBenchMetadataError` listing every row with an unknown
            split/category/label set; "warn" logs the same list and skips those rows.
        load_official_log_mel: opt in to reading the official pickled log-mel files (tensors
            only, see `load_official_log_mel`) into an `official_log_mel` field. Off by default:
            pickles are never opened unless asked for by this name.
    """

    def __init__(
        self,
        data_dir: str | Path,
        subset: str,
        *,
        known_categories: tuple[str, ...] | None = None,
        on_bad_row: str = "error",
        load_official_log_mel: bool = False,
    ) -> None:
        if on_bad_row not in ("error", "warn"):
            raise ValueError(f"on_bad_row must be 'error' or 'warn', got {on_bad_row!r}")
        if load_official_log_mel and subset == "avss":
            raise ValueError("load_official_log_mel: the AVSS release has no log-mel pickles")
        self.subset_dir = resolve_subset_dir(data_dir, subset)
        self.subset = subset
        self.known_categories = set(known_categories or S4_CATEGORIES + SYNTHETIC_CATEGORIES)
        self.on_bad_row = on_bad_row
        self.load_official_log_mel = load_official_log_mel
        self._records = self._read_metadata()
        self._palette = avss_palette()
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

    def _read_metadata(self) -> list[VideoRecord]:
        path = metadata_path(self.subset_dir, self.subset)
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        if not rows:
            raise AVSBenchMetadataError(f"{path} has no rows")
        columns = list(rows[0].keys())
        id_column = "uid" if self.subset == "avss" else columns[0]
        group_column = {"s4": "category", "ms3": "category", "avss": "label"}[self.subset]
        required = {id_column, "split"} | ({group_column} if self.subset != "ms3" else set())
        if missing := required - set(columns):
            raise AVSBenchMetadataError(f"{path} lacks the column(s) {sorted(missing)}; it has {columns}")
        records, problems = [], []
        for line, row in enumerate(rows, start=2):
            record = VideoRecord(
                video_id=(row[id_column] or "").strip(),
                split=(row["split"] or "").strip(),
                group=(row.get(group_column) or "").strip(),
                line=line,
            )
            if problem := self._row_problem(record):
                problems.append(f"line {line} (video {record.video_id!r}): {problem}")
            else:
                records.append(record)
        if problems:
            message = f"{path}: {len(problems)} metadata row(s) cannot be used:\n  " + "\n  ".join(problems)
            if self.on_bad_row == "error":
                raise AVSBenchMetadataError(message)
            logger.warning("%s\nthese rows are skipped (on_bad_row='warn')", message)
        return records

    def _check_label_index(self) -> None:
        """The release's `label2idx.json`, when present, must list the 71 known classes in id order."""
        path = self.subset_dir / "label2idx.json"
        if not path.is_file():
            return
        label_to_index = json.loads(path.read_text(encoding="utf-8"))
        names = tuple(sorted(label_to_index, key=label_to_index.get))
        if names != AVSS_CLASS_NAMES:
            raise ValueError(
                f"{path} does not list the {len(AVSS_CLASS_NAMES)} AVSS classes in the expected order "
                f"(background, accordion, ..., woman); class ids would be decoded wrongly"
            )

    def _row_problem(self, record: VideoRecord) -> str | None:
        if not record.video_id:
            return "empty video id"
        if record.split not in SPLITS:
            return f"unknown split {record.split!r} (expected one of {SPLITS})"
        if self.subset == "avss" and record.group not in AVSS_LABEL_SETS:
            return f"unknown label set {record.group!r} (expected one of {AVSS_LABEL_SETS})"
        if self.subset == "s4" and record.group not in self.known_categories:
            return f"unknown category {record.group!r}"
        if self.subset == "ms3" and record.group and record.group not in self.known_categories:
            return f"unknown category {record.group!r}"
        return None

    def iter_examples(self, split: str) -> Iterator[tuple[str, dict]]:
        """`(key, example)` pairs of one split, in metadata order."""
        for record in self.records(split):
            yield record.video_id, self.read_example(record)

    def read_example(self, record: VideoRecord) -> dict:
        frames = [
            self._read_image_file(path, record, "frame")
            for path in frame_paths(self.subset_dir, self.subset, record)
        ]
        labels, indices = [], []
        for index, path in mask_paths(self.subset_dir, self.subset, record).items():
            image = self._open_image(path, record, "ground-truth mask")
            if self.subset == "avss":
                label = color_mask_to_class_ids(np.asarray(image.convert("RGB")), self._palette)
            else:
                label = decode_binary_mask(image)
            labels.append({"bytes": _png_bytes(label), "path": path.name})
            indices.append(index)
        example = {"video_id": record.video_id}
        if self.subset == "avss":
            example["label_set"] = record.group
        else:
            example["category"] = record.group
        example["frames"] = frames
        example["audio"] = self._read_wav(wav_path(self.subset_dir, self.subset, record), record)
        example["mask_frame_indices"] = indices
        example["semantic_labels" if self.subset == "avss" else "masks"] = labels
        if self.load_official_log_mel:
            example["official_log_mel"] = load_official_log_mel(
                log_mel_path(self.subset_dir, self.subset, record)
            )
        return example

    def _describe(self, record: VideoRecord) -> str:
        return f"video {record.video_id!r} ({self.subset} {record.split}, metadata line {record.line})"

    def _open_image(self, path: Path, record: VideoRecord, what: str) -> Image.Image:
        if not path.is_file():
            raise FileNotFoundError(f"{self._describe(record)}: missing {what} file {path}")
        try:
            image = Image.open(path)
            image.load()
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise ValueError(f"{self._describe(record)}: unreadable {what} file {path}: {error}") from error
        return image

    def _read_image_file(self, path: Path, record: VideoRecord, what: str) -> dict:
        self._open_image(path, record, what)
        return {"bytes": path.read_bytes(), "path": path.name}

    def _read_wav(self, path: Path, record: VideoRecord) -> dict:
        if not path.is_file():
            raise FileNotFoundError(f"{self._describe(record)}: missing wav file {path}")
        data = path.read_bytes()
        try:
            info = soundfile.info(io.BytesIO(data))
        except (soundfile.LibsndfileError, RuntimeError) as error:
            raise ValueError(f"{self._describe(record)}: unreadable wav file {path}: {error}") from error
        if info.frames == 0:
            raise ValueError(f"{self._describe(record)}: wav file {path} holds no samples")
        return {"bytes": data, "path": path.name}


__all__ = [
    "AVSS_CLASS_NAMES",
    "AVSS_LABEL_SETS",
    "HF_SPLIT_NAMES",
    "S4_CATEGORIES",
    "SPLITS",
    "SUBSETS",
    "SYNTHETIC_CATEGORIES",
    "AVSBenchMetadataError",
    "AVSBenchReader",
    "VideoRecord",
    "avsbench_features",
    "decode_binary_mask",
    "decode_wav",
    "frames_per_clip",
    "load_official_log_mel",
    "resolve_subset_dir",
]
