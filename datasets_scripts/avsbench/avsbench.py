"""AVSBench (S4, MS3, AVSS) as a `datasets.GeneratorBasedBuilder` over the official release layout.

`datasets` 4+ no longer runs loading scripts by path, so use the builder class directly:

    from avsbench import AVSBench            # with datasets_scripts/avsbench on sys.path
    builder = AVSBench(config_name="s4", data_dir="/data/avsbench_data")
    builder.download_and_prepare()
    test = builder.as_dataset(split="test")

or export Parquet once (`avs-models prepare-avsbench RAW_DIR OUT_DIR`) and call
`datasets.load_dataset(OUT_DIR, "s4")`. The reading logic (layout, decoding, the checks of
every file and their error messages) lives in `avs_models.data.avsbench`; this module only
wires it to `datasets`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import datasets

from avs_models.data.avsbench import SPLITS, AVSBenchReader, avsbench_features
from avs_models.data.avss_classes import avss_class_table

_DESCRIPTIONS = {
    "s4": "AVSBench-object single-source (S4): one sounding object per clip, 5 frames.",
    "ms3": "AVSBench-object multi-source (MS3): several sounding objects per clip, 5 frames.",
    "avss": "AVSBench-semantic (AVSS): v1s/v1m (5 frames) and v2 (10 frames) clips, 71 classes.",
}
_CITATION = """\
@inproceedings{zhou2022avs, title={Audio-Visual Segmentation}, author={Zhou, Jinxing and others},
  booktitle={ECCV}, year={2022}}
@article{zhou2024avss, title={Audio-Visual Segmentation with Semantics}, author={Zhou, Jinxing and others},
  journal={IJCV}, year={2024}}
"""
_SPLIT_NAMES = {"train": datasets.Split.TRAIN, "val": datasets.Split.VALIDATION, "test": datasets.Split.TEST}


@dataclass
class AVSBenchConfig(datasets.BuilderConfig):
    """`load_official_log_mel=True` also reads the release's pickled log-mels (tensors only)."""

    load_official_log_mel: bool = False


class AVSBench(datasets.GeneratorBasedBuilder):
    """AVSBench read from a local `data_dir` in the official layout (obtain it from its authors)."""

    BUILDER_CONFIG_CLASS = AVSBenchConfig
    BUILDER_CONFIGS: ClassVar[list[AVSBenchConfig]] = [
        AVSBenchConfig(name=name, description=text) for name, text in _DESCRIPTIONS.items()
    ]

    def _info(self) -> datasets.DatasetInfo:
        description = _DESCRIPTIONS[self.config.name]
        if self.config.name == "avss":
            description += (
                " Class ids of `semantic_labels` (colour in the release's labels_rgb): "
                + ", ".join(f"{class_id} {name} {color}" for class_id, name, color in avss_class_table())
            )
        return datasets.DatasetInfo(
            description=description,
            features=avsbench_features(
                self.config.name, with_official_log_mel=self.config.load_official_log_mel
            ),
            homepage="http://www.avlbench.opennlplab.cn/dataset/avsbench",
            license="other: obtain AVSBench from its authors under their terms",
            citation=_CITATION,
        )

    def _reader(self) -> AVSBenchReader:
        if not self.config.data_dir:
            raise ValueError("AVSBench needs data_dir: the local folder of the official release")
        return AVSBenchReader(
            self.config.data_dir, self.config.name, load_official_log_mel=self.config.load_official_log_mel
        )

    def _split_generators(self, dl_manager):
        self._reader().require_every_split()
        return [
            datasets.SplitGenerator(name=_SPLIT_NAMES[split], gen_kwargs={"split": split}) for split in SPLITS
        ]

    def _generate_examples(self, split: str):
        yield from self._reader().iter_examples(split)
