"""AVSBench data: reading the official layout, Parquet export, synthetic data and collation."""

from .avsbench import (
    AVSS_LABEL_SETS,
    S4_CATEGORIES,
    SPLITS,
    SUBSETS,
    AVSBenchMetadataError,
    AVSBenchReader,
    AVSBenchValidationError,
    SkippedVideo,
    avsbench_features,
    decode_wav,
    frames_per_clip,
    load_official_log_mel,
)
from .avss_classes import (
    AVSS_CLASS_NAMES,
    AVSS_NUM_CLASSES,
    avss_class_table,
    avss_palette,
    class_ids_to_color_mask,
    color_mask_to_class_ids,
)
from .collator import AVSBenchCollator
from .export import PreparationReport, export_avsbench, write_dataset_card
from .synthetic import make_synthetic_avsbench
from .transforms import (
    TrainAugmentation,
    color_jitter,
    images_to_tensor,
    normalize,
    resize_frames,
    resize_labels,
)

__all__ = [
    "AVSS_CLASS_NAMES",
    "AVSS_LABEL_SETS",
    "AVSS_NUM_CLASSES",
    "S4_CATEGORIES",
    "SPLITS",
    "SUBSETS",
    "AVSBenchCollator",
    "AVSBenchMetadataError",
    "AVSBenchReader",
    "AVSBenchValidationError",
    "PreparationReport",
    "SkippedVideo",
    "TrainAugmentation",
    "avsbench_features",
    "avss_class_table",
    "avss_palette",
    "class_ids_to_color_mask",
    "color_jitter",
    "color_mask_to_class_ids",
    "decode_wav",
    "export_avsbench",
    "frames_per_clip",
    "images_to_tensor",
    "load_official_log_mel",
    "make_synthetic_avsbench",
    "normalize",
    "resize_frames",
    "resize_labels",
    "write_dataset_card",
]
