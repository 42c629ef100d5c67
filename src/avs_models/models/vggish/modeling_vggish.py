"""VGGish: the AudioSet-trained VGG-like audio encoder (one 128-d embedding per 0.96 s example).

`VGGishModel` maps log-mel examples `[N, 1, 96, 64]` (or `[B, T, 1, 96, 64]`) to embeddings,
optionally followed by the reference post-processing (PCA whitening, clipping, 8-bit
quantisation). `VGGishForAudioClassification` adds the AudioSet-527 head that C3N uses to name
the sounding source: an attention-pooled MLP over the post-processed embeddings.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from ..audio_utils import keep_hidden_state, multi_label_loss
from ..hub_code import HubModelMixin
from .configuration_vggish import VGGishConfig


@dataclass
class VGGishModelOutput(ModelOutput):
    """Output of [`VGGishModel`].

    Attributes:
        embeddings (`torch.FloatTensor` of shape `[N, embedding_size]` or `[B, T, embedding_size]`):
            Raw VGGish embeddings (after the final ReLU), the audio features AVS models consume.
        postprocessed (`torch.FloatTensor` of the same shape, *optional*):
            PCA-whitened, clipped and quantised embeddings, values in {0, ..., 255} (stored as
            float); returned when post-processing is enabled.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            With `output_hidden_states=True`: the output of every convolution stage
            `[..., channels, frames / 2**i, bands / 2**i]`, then of every fully connected layer
            `[..., width]` (the last one is `embeddings`), with the input's leading dimensions.
            They are the tensors the forward used, so gradients reach them.
    """

    embeddings: torch.FloatTensor | None = None
    postprocessed: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class VGGishAudioClassifierOutput(ModelOutput):
    """Output of [`VGGishForAudioClassification`].

    Attributes:
        loss (`torch.FloatTensor` of shape `[]`, *optional*):
            Multi-label binary cross-entropy, when `labels` are given.
        logits (`torch.FloatTensor` of shape `[N, num_labels]` or `[B, T, num_labels]`):
            AudioSet class logits (apply a sigmoid for per-class probabilities).
        embeddings (`torch.FloatTensor`): raw embeddings, as in [`VGGishModelOutput`].
        postprocessed (`torch.FloatTensor`): post-processed embeddings (the head's input).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): as in [`VGGishModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    postprocessed: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class VGGishConvStage(GradientCheckpointingLayer):
    """3x3 convolutions (padding 1), each followed by ReLU, then a 2x2 max-pool (the unit that
    gradient checkpointing recomputes)."""

    def __init__(self, in_channels: int, channels: list[int]):
        super().__init__()
        self.convs = nn.ModuleList()
        for out_channels in channels:
            self.convs.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
            in_channels = out_channels

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            hidden_states = F.relu(conv(hidden_states))
        return F.max_pool2d(hidden_states, kernel_size=2, stride=2)


class VGGishPostprocessor(nn.Module):
    """PCA whitening + clipping + 8-bit quantisation of VGGish embeddings (the AudioSet release format).

    Buffers: `pca_eigen_vectors` `[E, E]` (rows are output dimensions) and `pca_means` `[E, 1]`.
    They start as the identity and zeros; conversion fills in the published PCA parameters.
    """

    def __init__(self, config: VGGishConfig):
        super().__init__()
        size = config.embedding_size
        self.quantize_min = config.quantize_min
        self.quantize_max = config.quantize_max
        self.register_buffer("pca_eigen_vectors", torch.eye(size))
        self.register_buffer("pca_means", torch.zeros(size, 1))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """`[N, E]` embeddings -> `[N, E]` quantised values in {0, ..., 255} (float)."""
        # Same operation order as the reference (column vectors), so rounding ties agree.
        whitened = torch.mm(self.pca_eigen_vectors, embeddings.t() - self.pca_means).t()
        clipped = whitened.clamp(self.quantize_min, self.quantize_max)
        return torch.round((clipped - self.quantize_min) * (255.0 / (self.quantize_max - self.quantize_min)))


class VGGishPreTrainedModel(HubModelMixin, PreTrainedModel):
    config_class = VGGishConfig
    base_model_prefix = "vggish"
    main_input_name = "input_features"
    input_modalities = ("audio",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["VGGishConvStage", "VGGishClassificationHead"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, VGGishPostprocessor):
            init.eye_(module.pca_eigen_vectors)
            init.zeros_(module.pca_means)


def _flatten_examples(
    input_features: torch.Tensor, config: VGGishConfig
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Validate `[N, 1, F, M]` or `[B, T, 1, F, M]` log-mel input; return `[N, 1, F, M]` and the leading dims."""
    example_shape = (1, config.num_frames, config.num_mel_bins)
    if not isinstance(input_features, torch.Tensor):
        raise TypeError(f"`input_features` must be a torch.Tensor, got {type(input_features).__name__}")
    if not input_features.is_floating_point():
        raise TypeError(f"`input_features` must be a float tensor, got dtype {input_features.dtype}")
    if input_features.dim() not in (4, 5) or tuple(input_features.shape[-3:]) != example_shape:
        raise ValueError(
            f"`input_features` must have shape [N, {', '.join(map(str, example_shape))}] or "
            f"[B, T, {', '.join(map(str, example_shape))}], got {tuple(input_features.shape)}"
        )
    leading_dims = tuple(input_features.shape[:-3])
    return input_features.reshape(-1, *example_shape), leading_dims


class VGGishModel(VGGishPreTrainedModel):
    """The VGGish encoder: log-mel examples -> 128-d embeddings (optionally post-processed)."""

    def __init__(self, config: VGGishConfig):
        super().__init__(config)
        self.stages = nn.ModuleList()
        in_channels = 1
        for channels in config.stage_channels:
            self.stages.append(VGGishConvStage(in_channels, channels))
            in_channels = channels[-1]
        widths = [config.flattened_size, *config.hidden_sizes, config.embedding_size]
        self.fc_layers = nn.ModuleList(
            nn.Linear(width_in, width_out) for width_in, width_out in itertools.pairwise(widths)
        )
        self.postprocessor = VGGishPostprocessor(config)
        self.post_init()

    def forward(
        self,
        input_features: torch.Tensor,
        postprocess: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> VGGishModelOutput | tuple:
        """
        Args:
            input_features (`torch.FloatTensor` of shape `[N, 1, 96, 64]` or `[B, T, 1, 96, 64]`):
                Log-mel examples from [`VGGishFeatureExtractor`].
            postprocess (`bool`, *optional*): also return `postprocessed`; defaults to
                `config.postprocess`.
            output_hidden_states (`bool`, *optional*): also return every stage's and every fully
                connected layer's output; defaults to `config.output_hidden_states`.

        Returns:
            [`VGGishModelOutput`] with `embeddings` `[N, 128]` or `[B, T, 128]`.
        """
        config = self.config
        examples, leading_dims = _flatten_examples(input_features, config)
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = config.return_dict if return_dict is None else return_dict
        all_hidden_states = [] if output_hidden_states else None
        hidden_states = examples.to(self.dtype)
        if self.training and not hidden_states.requires_grad and self.is_activation_checkpointing:
            # Reentrant checkpointing only back-propagates into a stage whose input requires grad.
            hidden_states = hidden_states.detach().requires_grad_()
        for stage in self.stages:
            hidden_states = keep_hidden_state(stage(hidden_states), leading_dims, all_hidden_states)
        # Flatten channels-last ([N, frames, bands, channels]): the order of the original
        # TensorFlow model, which the published fully connected weights expect.
        hidden_states = hidden_states.permute(0, 2, 3, 1).flatten(1)
        for fc_layer in self.fc_layers:
            hidden_states = keep_hidden_state(F.relu(fc_layer(hidden_states)), leading_dims, all_hidden_states)
        embeddings = hidden_states

        postprocess = config.postprocess if postprocess is None else postprocess
        postprocessed = self.postprocessor(embeddings).reshape(*leading_dims, -1) if postprocess else None
        output = VGGishModelOutput(
            embeddings=embeddings.reshape(*leading_dims, -1),
            postprocessed=postprocessed,
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
        )
        return output if return_dict else output.to_tuple()


class VGGishAttentionPooling(nn.Module):
    """Attention pooling over time: sigmoid attention weights (normalised over time) times linear scores."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.attention = nn.Conv2d(hidden_size, hidden_size, kernel_size=1)
        self.values = nn.Conv2d(hidden_size, hidden_size, kernel_size=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`[N, hidden, time, 1]` -> `[N, hidden]`."""
        weights = torch.sigmoid(self.attention(hidden_states))[..., 0].clamp(1e-7, 1.0 - 1e-7)
        values = self.values(hidden_states)[..., 0]
        return (weights / weights.sum(dim=2, keepdim=True) * values).sum(dim=2)


class VGGishClassificationHead(nn.Module):
    """AudioSet head over post-processed embeddings (the one C3N loads from `md_50000_iters.pth`).

    Input `[N, time, E]` dequantised embeddings ((q - 128) / 128). Three 1x1-conv blocks
    (conv without bias, batch norm, ReLU, dropout) after an input batch norm, attention pooling
    over time, batch norm, ReLU, dropout and a linear layer to `num_labels` logits. C3N feeds one
    example at a time (time = 1), where the attention weights normalise to exactly 1.
    """

    def __init__(self, config: VGGishConfig):
        super().__init__()
        hidden = config.classifier_hidden_size
        self.dropout = config.classifier_dropout
        self.input_norm = nn.BatchNorm2d(config.embedding_size, eps=config.batch_norm_eps)
        widths = [config.embedding_size, hidden, hidden, hidden]
        self.convs = nn.ModuleList(
            nn.Conv2d(w_in, w_out, kernel_size=1, bias=False) for w_in, w_out in itertools.pairwise(widths)
        )
        self.norms = nn.ModuleList(nn.BatchNorm2d(hidden, eps=config.batch_norm_eps) for _ in self.convs)
        self.pooling = VGGishAttentionPooling(hidden)
        self.pooled_norm = nn.BatchNorm1d(hidden, eps=config.batch_norm_eps)
        self.classifier = nn.Linear(hidden, config.num_labels)

    def forward(self, dequantized: torch.Tensor) -> torch.Tensor:
        """`[N, time, E]` -> `[N, num_labels]` logits."""
        hidden_states = self.input_norm(dequantized.transpose(1, 2)[..., None])
        for conv, norm in zip(self.convs, self.norms):
            hidden_states = F.dropout(
                F.relu(norm(conv(hidden_states))), p=self.dropout, training=self.training
            )
        pooled = self.pooling(hidden_states)
        pooled = F.dropout(F.relu(self.pooled_norm(pooled)), p=self.dropout, training=self.training)
        return self.classifier(pooled)


class VGGishForAudioClassification(VGGishPreTrainedModel):
    """VGGish with the AudioSet-527 classification head C3N uses: examples -> class logits.

    The head reads the post-processed embeddings (PCA, 8-bit), dequantised to [-1, 1) as
    `(q - 128) / 128`, each example on its own, exactly as C3N's audio extractor does; so the
    converted PCA parameters are required for meaningful logits.
    """

    def __init__(self, config: VGGishConfig):
        super().__init__(config)
        self.vggish = VGGishModel(config)
        self.head = VGGishClassificationHead(config)
        self.post_init()

    def forward(
        self,
        input_features: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> VGGishAudioClassifierOutput | tuple:
        """
        Args:
            input_features (`torch.FloatTensor` of shape `[N, 1, 96, 64]` or `[B, T, 1, 96, 64]`):
                Log-mel examples from [`VGGishFeatureExtractor`].
            labels (`torch.FloatTensor` of shape `[N, num_labels]` or `[B, T, num_labels]`, *optional*):
                Multi-hot targets; gives a binary cross-entropy `loss`.
            output_hidden_states (`bool`, *optional*): also return the encoder's hidden states.

        Returns:
            [`VGGishAudioClassifierOutput`] with `logits` `[N, num_labels]` or `[B, T, num_labels]`.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        encoded = self.vggish(
            input_features, postprocess=True, output_hidden_states=output_hidden_states, return_dict=True
        )
        leading_dims = encoded.embeddings.shape[:-1]
        dequantized = (encoded.postprocessed.reshape(-1, 1, self.config.embedding_size) - 128.0) / 128.0
        logits = self.head(dequantized).reshape(*leading_dims, -1)

        loss = multi_label_loss(logits, labels) if labels is not None else None
        output = VGGishAudioClassifierOutput(
            loss=loss,
            logits=logits,
            embeddings=encoded.embeddings,
            postprocessed=encoded.postprocessed,
            hidden_states=encoded.hidden_states,
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "VGGishAudioClassifierOutput",
    "VGGishForAudioClassification",
    "VGGishModel",
    "VGGishModelOutput",
    "VGGishPreTrainedModel",
]
