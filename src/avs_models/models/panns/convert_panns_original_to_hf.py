"""Convert a public PANNs Cnn14 checkpoint (e.g. `Cnn14_16k_mAP=0.438.pth`) to a Transformers folder.

Input: the `.pth` file of the PANNs release, a dict whose `model` entry is the state dict of
`Cnn14_16k` (other entries, such as `iteration`, are ignored), or a bare state dict. Keys:
`spectrogram_extractor.stft.conv_real/conv_imag.weight` (the STFT as convolution kernels),
`logmel_extractor.melW` (mel filter bank), `bn0.*`, `conv_block{1..6}.{conv1,conv2,bn1,bn2}.*`,
`fc1.*` (embedding layer) and `fc_audioset.*` (AudioSet classifier).

Output: a `save_pretrained` folder (config, `model.safetensors`, `preprocessor_config.json`) holding a
`PannsForAudioClassification` (a `PannsModel` when the checkpoint has no `fc_audioset`). Layer sizes
are read from the checkpoint; the sample rate, hop and mel band edges cannot be, so they are options
(defaults: Cnn14_16k) and the checkpoint's STFT kernels and mel filters are checked against them.

    python -m avs_models.models.panns.convert_panns_original_to_hf \
        --checkpoint "Cnn14_16k_mAP=0.438.pth" --output-dir panns-cnn14-16k \
        --labels-csv class_labels_indices.csv
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import torch

from ...hub import write_conversion_card
from ..conversion_utils import audioset_labels, load_state_dict_strictly, load_weights_only
from .configuration_panns import PannsConfig
from .feature_extraction_panns import PannsFeatureExtractor
from .modeling_panns import PannsForAudioClassification, PannsModel, hann_dft_kernels, slaney_mel_filters

_STFT_REAL_KEY = "spectrogram_extractor.stft.conv_real.weight"
_STFT_IMAGINARY_KEY = "spectrogram_extractor.stft.conv_imag.weight"
_MEL_FILTERS_KEY = "logmel_extractor.melW"

# The front end must agree with the config's sample rate and band edges to float32 rounding.
_FRONT_END_TOLERANCE = 1e-5


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """`torch.load(weights_only=True)` of a PANNs checkpoint; returns the state dict (the `model` entry)."""
    checkpoint = load_weights_only(path)
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("model"), Mapping):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, Mapping) or not all(
        isinstance(value, torch.Tensor) for value in checkpoint.values()
    ):
        raise ValueError(f"{path} must hold a state dict of tensors or a dict with one under 'model'")
    return dict(checkpoint)


def _required(state_dict: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state_dict:
        raise ValueError(f"missing key in the PANNs checkpoint: {key}")
    return state_dict[key]


def config_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    sample_rate: int = 16000,
    hop_size: int = 160,
    fmin: float = 50.0,
    fmax: float = 8000.0,
    labels_csv: str | Path | None = None,
) -> PannsConfig:
    """A `PannsConfig` with the layer sizes of `state_dict` and the given signal parameters; class
    names from `labels_csv`, else AudioSet's for a 527-class classifier."""
    block_channels = []
    while f"conv_block{len(block_channels) + 1}.conv1.weight" in state_dict:
        block_channels.append(state_dict[f"conv_block{len(block_channels) + 1}.conv1.weight"].shape[0])
    if not block_channels:
        raise ValueError("missing key in the PANNs checkpoint: conv_block1.conv1.weight")
    config_kwargs = {
        "sample_rate": sample_rate,
        "window_size": _required(state_dict, _STFT_REAL_KEY).shape[-1],
        "hop_size": hop_size,
        "num_mel_bins": _required(state_dict, _MEL_FILTERS_KEY).shape[1],
        "fmin": fmin,
        "fmax": fmax,
        "block_channels": block_channels,
        "embedding_size": _required(state_dict, "fc1.weight").shape[0],
    }
    if "fc_audioset.weight" in state_dict:
        num_labels = state_dict["fc_audioset.weight"].shape[0]
        id2label = audioset_labels(num_labels, labels_csv)
        config_kwargs.update({"id2label": id2label} if id2label is not None else {"num_labels": num_labels})
    elif labels_csv is not None:
        raise ValueError("labels only apply to a checkpoint with a classifier (fc_audioset)")
    return PannsConfig(**config_kwargs)


def _stft_kernels(state_dict: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The two STFT convolutions as our single kernel buffer: real rows, then imaginary rows."""
    return torch.cat([_required(state_dict, _STFT_REAL_KEY), _required(state_dict, _STFT_IMAGINARY_KEY)])


def check_front_end(state_dict: Mapping[str, torch.Tensor], config: PannsConfig) -> None:
    """Check that the checkpoint's STFT kernels and mel filters are the ones `config` describes."""
    expected_kernels = torch.from_numpy(hann_dft_kernels(config.window_size)).float()
    expected_mel_filters = torch.from_numpy(
        slaney_mel_filters(
            config.sample_rate, config.window_size, config.num_mel_bins, config.fmin, config.fmax
        )
    ).float()
    for name, found, expected, hint in (
        (
            "STFT kernels",
            _stft_kernels(state_dict),
            expected_kernels,
            f"a periodic Hann window of {config.window_size} samples: this is not a Cnn14 STFT",
        ),
        (
            "mel filters",
            state_dict[_MEL_FILTERS_KEY],
            expected_mel_filters,
            (
                f"sample_rate={config.sample_rate}, fmin={config.fmin}, fmax={config.fmax}: pass the sample "
                "rate and mel band edges the checkpoint was trained with"
            ),
        ),
    ):
        if found.shape != expected.shape:
            raise ValueError(
                f"the checkpoint's {name} have shape {tuple(found.shape)}, expected {tuple(expected.shape)}"
            )
        difference = (found.float() - expected).abs().max().item()
        if difference > _FRONT_END_TOLERANCE * expected.abs().max().item():
            raise ValueError(
                f"the checkpoint's {name} differ (max abs difference {difference:.3g}) from those of {hint}"
            )


def original_key_prefixes(config: PannsConfig) -> dict[str, str]:
    """Original key prefix -> ours inside `PannsModel` (blocks are numbered from 1 there, from 0 here)."""
    prefixes = {_MEL_FILTERS_KEY: "log_mel.mel_filters", "bn0.": "mel_norm.", "fc1.": "embedding_layer."}
    for index in range(len(config.block_channels)):
        for layer in (1, 2):
            prefixes[f"conv_block{index + 1}.conv{layer}."] = f"conv_blocks.{index}.conv{layer}."
            prefixes[f"conv_block{index + 1}.bn{layer}."] = f"conv_blocks.{index}.norm{layer}."
    return prefixes


def convert_panns_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: PannsConfig
) -> dict[str, torch.Tensor]:
    """Original Cnn14 state dict -> `PannsForAudioClassification` keys (`PannsModel` keys without `fc_audioset`)."""
    encoder_prefix = "panns." if "fc_audioset.weight" in state_dict else ""
    prefixes = {key: encoder_prefix + value for key, value in original_key_prefixes(config).items()}
    prefixes["fc_audioset."] = "classifier."
    converted = {f"{encoder_prefix}log_mel.stft_kernels": _stft_kernels(state_dict)}
    unexpected = []
    for key, value in state_dict.items():
        if key in (_STFT_REAL_KEY, _STFT_IMAGINARY_KEY):
            continue
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            unexpected.append(key)
        else:
            converted[prefixes[prefix] + key[len(prefix) :]] = value
    if unexpected:
        raise ValueError(f"unexpected keys in the PANNs checkpoint: {sorted(unexpected)}")
    return converted


def convert_panns_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    labels_csv: str | Path | None = None,
    sample_rate: int = 16000,
    hop_size: int = 160,
    fmin: float = 50.0,
    fmax: float = 8000.0,
) -> PannsModel | PannsForAudioClassification:
    """Convert and `save_pretrained` to `output_dir`; returns the converted model (eval mode)."""
    state_dict = load_checkpoint(checkpoint_path)
    config = config_from_state_dict(state_dict, sample_rate, hop_size, fmin, fmax, labels_csv)
    check_front_end(state_dict, config)
    model_class = PannsForAudioClassification if "fc_audioset.weight" in state_dict else PannsModel
    model = model_class(config)
    load_state_dict_strictly(model, convert_panns_state_dict(state_dict, config))
    model.eval()

    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    PannsFeatureExtractor(
        sampling_rate=config.sample_rate, segment_length=config.sample_rate
    ).save_pretrained(output_dir)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="Cnn14_16k_mAP=0.438.pth (or another Cnn14 .pth)")
    parser.add_argument("--output-dir", required=True, help="folder to write the converted model to")
    parser.add_argument(
        "--labels-csv", help="AudioSet class_labels_indices.csv, for id2label of the classifier"
    )
    parser.add_argument("--sample-rate", type=int, default=16000, help="sample rate of the checkpoint (Hz)")
    parser.add_argument("--hop-size", type=int, default=160, help="STFT hop of the checkpoint (samples)")
    parser.add_argument("--fmin", type=float, default=50.0, help="lower mel band edge of the checkpoint (Hz)")
    parser.add_argument(
        "--fmax", type=float, default=8000.0, help="upper mel band edge of the checkpoint (Hz)"
    )
    args = parser.parse_args(argv)
    model = convert_panns_checkpoint(
        args.checkpoint,
        args.output_dir,
        labels_csv=args.labels_csv,
        sample_rate=args.sample_rate,
        hop_size=args.hop_size,
        fmin=args.fmin,
        fmax=args.fmax,
    )
    write_conversion_card(args.output_dir, argv)  # README.md, the model card
    print(f"saved {type(model).__name__} to {args.output_dir}")


if __name__ == "__main__":
    main()
