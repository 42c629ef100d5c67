"""Configuration of BEATs, the AudioSet-trained audio Transformer that C3N uses as one of its audio encoders."""

from __future__ import annotations

from collections.abc import Mapping

from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

from ..audio_utils import validated_count
from ..hub_code import HubConfigMixin

# Defaults of the official `BEATsConfig`: a checkpoint's `cfg` dict only overrides some of them.
ORIGINAL_CONFIG_DEFAULTS = {
    "input_patch_size": -1,
    "embed_dim": 512,
    "conv_bias": False,
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_wise_gradient_decay_ratio": 1.0,
    "layer_norm_first": False,
    "deep_norm": False,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "relative_position_embedding": False,
    "num_buckets": 320,
    "max_distance": 1280,
    "gru_rel_pos": False,
    "finetuned_model": False,
    "predictor_dropout": 0.1,
    "predictor_class": 527,
}

# Official `BEATsConfig` field -> ours (`activation_fn`, `finetuned_model` and `predictor_class`
# are handled by `BeatsConfig.from_original_config`).
ORIGINAL_CONFIG_FIELDS = {
    "input_patch_size": "patch_size",
    "embed_dim": "patch_embedding_dim",
    "conv_bias": "patch_embedding_bias",
    "encoder_layers": "num_hidden_layers",
    "encoder_embed_dim": "hidden_size",
    "encoder_ffn_embed_dim": "intermediate_size",
    "encoder_attention_heads": "num_attention_heads",
    "layer_wise_gradient_decay_ratio": "layer_gradient_decay",
    "layer_norm_first": "layer_norm_first",
    "deep_norm": "deep_norm",
    "dropout": "hidden_dropout",
    "attention_dropout": "attention_dropout",
    "activation_dropout": "activation_dropout",
    "encoder_layerdrop": "layerdrop",
    "dropout_input": "input_dropout",
    "conv_pos": "positional_conv_kernel_size",
    "conv_pos_groups": "positional_conv_groups",
    "relative_position_embedding": "use_relative_position_bias",
    "num_buckets": "relative_position_buckets",
    "max_distance": "relative_position_max_distance",
    "gru_rel_pos": "gated_relative_position_bias",
    "predictor_dropout": "classifier_dropout",
}

# Official activation names -> `transformers.activations.ACT2FN` keys ("glu", a gated
# feed-forward with its own weights, has no equivalent here).
ORIGINAL_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_accurate": "gelu_pytorch_tanh",
    "gelu_fast": "gelu_pytorch_tanh",
    "relu": "relu",
    "tanh": "tanh",
    "linear": "linear",
}


class BeatsConfig(HubConfigMixin, PreTrainedConfig):
    r"""Configuration of [`BeatsModel`] and [`BeatsForAudioClassification`].

    The defaults describe the public AudioSet-finetuned BEATs checkpoints (`BEATs_iter3_plus_AS2M_
    finetuned_on_AS2M_cpt{1,2}.pt`, the ones C3N loads): a Kaldi fbank of 128 mel bins, 16x16
    patches embedded to 512 channels and projected to 768, a convolutional positional embedding,
    12 post-norm ("deep norm") Transformer layers with a gated, bucketed relative position bias,
    and a linear AudioSet-527 predictor applied to every token.

    Attributes:
        num_mel_bins (`int`, defaults to 128):
            Mel bands of the Kaldi fbank the model computes from the waveform.
        sampling_rate (`int`, defaults to 16000):
            Rate of the input waveforms in Hz.
        frame_length_ms (`float`, defaults to 25.0):
            Fbank frame length in milliseconds (400 samples at 16 kHz).
        frame_shift_ms (`float`, defaults to 10.0):
            Fbank frame shift in milliseconds (160 samples at 16 kHz).
        waveform_scale (`float`, defaults to 32768.0):
            Factor applied to the [-1, 1] waveform before the fbank (the official model expects
            16-bit sample values, 2**15).
        fbank_mean (`float`, defaults to 15.41663):
            Mean subtracted from the log-mel fbank.
        fbank_std (`float`, defaults to 6.55582):
            The fbank is divided by twice this value (as the official preprocessing does).
        patch_size (`int`, defaults to 16):
            Side of the square patches (frames x mel bins) of the patch embedding.
        patch_embedding_dim (`int`, defaults to 512):
            Channels of the patch embedding; projected to `hidden_size` when they differ.
        patch_embedding_bias (`bool`, defaults to `False`):
            Whether the patch-embedding convolution has a bias.
        hidden_size (`int`, defaults to 768):
            Width of the Transformer (and of the output embeddings).
        num_hidden_layers (`int`, defaults to 12):
            Transformer layers.
        num_attention_heads (`int`, defaults to 12):
            Attention heads per layer.
        intermediate_size (`int`, defaults to 3072):
            Width of the feed-forward layers.
        hidden_act (`str`, defaults to `"gelu"`):
            Activation of the feed-forward layers (a key of `transformers.activations.ACT2FN`).
        positional_conv_kernel_size (`int`, defaults to 128):
            Kernel size of the convolutional positional embedding (over tokens).
        positional_conv_groups (`int`, defaults to 16):
            Groups of that convolution.
        use_relative_position_bias (`bool`, defaults to `True`):
            Whether attention adds a learned relative position bias (one table shared by all layers).
        relative_position_buckets (`int`, defaults to 320):
            Buckets of the relative position bias (half for each direction; within each half, the
            first half of the buckets are exact distances, the rest grow logarithmically).
        relative_position_max_distance (`int`, defaults to 800):
            Distance that the logarithmic buckets reach; longer distances share the last bucket.
        gated_relative_position_bias (`bool`, defaults to `True`):
            Whether every layer scales the position bias by a gate computed from each query.
        deep_norm (`bool`, defaults to `True`):
            Post-norm layers whose residual branch is scaled by `(2 * num_hidden_layers) ** 0.25`.
        layer_norm_first (`bool`, defaults to `False`):
            Pre-norm layers (with a final layer norm) instead of post-norm ones; excludes `deep_norm`.
        layer_norm_eps (`float`, defaults to 1e-5):
            Epsilon of all layer norms.
        input_dropout (`float`, defaults to 0.0):
            Dropout on the projected patch embeddings.
        hidden_dropout (`float`, defaults to 0.0):
            Dropout after the positional embedding and on the attention and feed-forward outputs.
        attention_dropout (`float`, defaults to 0.0):
            Dropout on the attention probabilities.
        activation_dropout (`float`, defaults to 0.0):
            Dropout after the feed-forward activation.
        layerdrop (`float`, defaults to 0.05):
            Probability of skipping a whole layer in training mode.
        layer_gradient_decay (`float`, defaults to 0.6):
            Factor applied to the gradient flowing into every layer's input (layer-wise learning
            rate decay for fine-tuning; the forward pass is unchanged).
        classifier_dropout (`float`, defaults to 0.0):
            Dropout before the per-token AudioSet predictor.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialiser of linear layers and embeddings.
        num_labels (`int`, defaults to 527):
            Classes of the predictor (527 AudioSet classes).
    """

    model_type = "beats"

    num_mel_bins: int = 128
    sampling_rate: int = 16000
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    waveform_scale: float = 32768.0
    fbank_mean: float = 15.41663
    fbank_std: float = 6.55582
    patch_size: int = 16
    patch_embedding_dim: int = 512
    patch_embedding_bias: bool = False
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    positional_conv_kernel_size: int = 128
    positional_conv_groups: int = 16
    use_relative_position_bias: bool = True
    relative_position_buckets: int = 320
    relative_position_max_distance: int = 800
    gated_relative_position_bias: bool = True
    deep_norm: bool = True
    layer_norm_first: bool = False
    layer_norm_eps: float = 1e-5
    input_dropout: float = 0.0
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    layerdrop: float = 0.05
    layer_gradient_decay: float = 0.6
    classifier_dropout: float = 0.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.id2label is None:
            kwargs.setdefault("num_labels", 527)  # the AudioSet ontology
        for name in (
            "num_mel_bins",
            "sampling_rate",
            "patch_size",
            "patch_embedding_dim",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "positional_conv_kernel_size",
            "positional_conv_groups",
        ):
            setattr(self, name, validated_count(name, getattr(self, name)))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads})"
            )
        if self.hidden_size % self.positional_conv_groups:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `positional_conv_groups` "
                f"({self.positional_conv_groups})"
            )
        if self.num_mel_bins < self.patch_size:
            raise ValueError(
                f"`num_mel_bins` ({self.num_mel_bins}) must be at least `patch_size` ({self.patch_size})"
            )
        if self.frame_shift_ms <= 0 or self.frame_length_ms <= 0:
            raise ValueError(
                f"`frame_length_ms` and `frame_shift_ms` must be positive, got {self.frame_length_ms} "
                f"and {self.frame_shift_ms}"
            )
        if self.fbank_std <= 0:
            raise ValueError(f"`fbank_std` must be positive, got {self.fbank_std}")
        if self.use_relative_position_bias and (
            self.relative_position_buckets < 4
            or self.relative_position_max_distance <= self.relative_position_buckets // 4
        ):
            raise ValueError(
                "`relative_position_buckets` must be at least 4 and `relative_position_max_distance` larger "
                f"than a quarter of it, got {self.relative_position_buckets} and "
                f"{self.relative_position_max_distance}"
            )
        if self.gated_relative_position_bias and not self.use_relative_position_bias:
            raise ValueError("`gated_relative_position_bias` needs `use_relative_position_bias=True`")
        if self.deep_norm and self.layer_norm_first:
            raise ValueError("`deep_norm` (post-norm) and `layer_norm_first` (pre-norm) exclude each other")
        if self.hidden_act not in ACT2FN:
            raise ValueError(
                f"`hidden_act` must be one of transformers' activations (e.g. 'gelu'), got {self.hidden_act!r}"
            )
        for name in (
            "input_dropout",
            "hidden_dropout",
            "attention_dropout",
            "activation_dropout",
            "layerdrop",
            "classifier_dropout",
        ):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {getattr(self, name)!r}")
        super().__post_init__(**kwargs)

    @property
    def frame_length(self) -> int:
        """Fbank frame length in samples (400 at 16 kHz)."""
        return int(self.sampling_rate * self.frame_length_ms / 1000)

    @property
    def frame_shift(self) -> int:
        """Fbank frame shift in samples (160 at 16 kHz)."""
        return int(self.sampling_rate * self.frame_shift_ms / 1000)

    @property
    def min_num_samples(self) -> int:
        """Shortest waveform that gives one patch of `patch_size` frames (2800 samples at 16 kHz)."""
        return self.frame_length + self.frame_shift * (self.patch_size - 1)

    @classmethod
    def from_original_config(cls, original: Mapping, **kwargs) -> BeatsConfig:
        """Build the config from the `cfg` dict stored in an official BEATs checkpoint.

        Fields missing from `original` take the official defaults (which differ from ours, e.g.
        no relative position bias). `predictor_class` gives `num_labels` when `finetuned_model`
        is set; fields that do not exist here are ignored. `kwargs` override the result.
        """
        original = {**ORIGINAL_CONFIG_DEFAULTS, **original}
        if original["activation_fn"] not in ORIGINAL_ACTIVATIONS:
            raise ValueError(
                f"the official activation_fn {original['activation_fn']!r} is not supported; supported: "
                f"{sorted(ORIGINAL_ACTIVATIONS)}"
            )
        values = {ours: original[theirs] for theirs, ours in ORIGINAL_CONFIG_FIELDS.items()}
        values["hidden_act"] = ORIGINAL_ACTIVATIONS[original["activation_fn"]]
        if original["finetuned_model"] and "id2label" not in kwargs:
            values["num_labels"] = int(original["predictor_class"])
        values.update(kwargs)
        return cls(**values)


__all__ = ["BeatsConfig"]
