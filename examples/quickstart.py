"""Offline quick start: a synthetic AVSBench-S4 set, read, collated and segmented by PCMANet.

The model has random weights (no weights can be downloaded here): the point is the whole path
from files in the official layout to masks, with the real reader, collator, VGGish front end and
model. Train it with the training code, or convert an official checkpoint, for real masks.
"""

import tempfile

import torch

from avs_models import PCMANetConfig, PCMANetForAudioVisualSegmentation, VGGishConfig
from avs_models.data import AVSBenchCollator, AVSBenchReader, make_synthetic_avsbench
from avs_models.models.backbones import resnet50_backbone_config

with tempfile.TemporaryDirectory() as data_dir:
    make_synthetic_avsbench(data_dir, "s4", num_videos=6, seed=0, image_size=112)
    examples = [example for _, example in AVSBenchReader(data_dir, "s4").iter_examples("train")]
    batch = AVSBenchCollator("s4", image_size=112)(examples[:2])

print({name: tuple(tensor.shape) for name, tensor in batch.items()})
torch.manual_seed(0)
small_resnet = resnet50_backbone_config(embedding_size=16, hidden_sizes=[32, 64, 96, 128], depths=[1, 1, 1, 1])
config = PCMANetConfig(backbone_config=small_resnet, audio_config=VGGishConfig(), hidden_size=64, qsca_pool_sizes=[14, 7, 4, 4])
model = PCMANetForAudioVisualSegmentation(config).eval()
with torch.no_grad():
    output = model(**batch)
masks = output.logits.sigmoid() > 0.5
print(f"masks {tuple(masks.shape)}, loss on the labelled first frames {output.loss:.3f}")
print(f"kept-token ratios of QSCA stages 3, 2, 1: {[round(r, 3) for r in output.kept_token_ratios.tolist()]}")
