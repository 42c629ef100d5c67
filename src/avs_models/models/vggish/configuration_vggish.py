"""Configuration of VGGish, the AudioSet-trained audio encoder shared by the AVS models."""

from transformers import PreTrainedConfig

from ..hub_code import HubConfigMixin


class VGGishConfig(HubConfigMixin, PreTrainedConfig):
    r"""Configuration of [`VGGishModel`] and [`VGGishForAudioClassification`].

    The defaults describe the public VGGish network: four convolution stages (3x3 convolutions with
    ReLU, each stage closed by a 2x2 max-pool) over a `[96, 64]` log-mel example, three fully
    connected layers (4096, 4096, 128, each followed by ReLU) and a 128-d embedding per example.

    Attributes:
        num_frames (`int`, defaults to 96):
            Frames (10 ms each) per log-mel example.
        num_mel_bins (`int`, defaults to 64):
            Mel bands per frame.
        stage_channels (`list[list[int]]`, defaults to `[[64], [128], [256, 256], [512, 512]]`):
            Output channels of the 3x3 convolutions of each stage; every stage halves both spatial
            sizes with a 2x2 max-pool, so `num_frames` and `num_mel_bins` must be divisible by
            `2 ** len(stage_channels)`.
        hidden_sizes (`list[int]`, defaults to `[4096, 4096]`):
            Widths of the fully connected layers before the embedding layer.
        embedding_size (`int`, defaults to 128):
            Width of the output embedding.
        postprocess (`bool`, defaults to `False`):
            Whether [`VGGishModel`] also returns the PCA-whitened, clipped and 8-bit quantised
            embeddings (`postprocessed`). AVSBench, PCMANet and C3N feed the raw `embeddings` to
            their segmentation networks (their configs set `POSTPROCESS_LOG_MEL_WITH_PCA = False`),
            hence the default.
        quantize_min (`float`, defaults to -2.0):
            Lower clipping bound of the PCA output before 8-bit quantisation.
        quantize_max (`float`, defaults to 2.0):
            Upper clipping bound of the PCA output before 8-bit quantisation.
        classifier_hidden_size (`int`, defaults to 1024):
            Width of the AudioSet classification head of [`VGGishForAudioClassification`].
        classifier_dropout (`float`, defaults to 0.5):
            Dropout of that head (active in training mode only).
        batch_norm_eps (`float`, defaults to 1e-5):
            Epsilon of the head's batch normalisations.
        num_labels (`int`, defaults to 527):
            Classes of the classification head (527 AudioSet classes).
    """

    model_type = "vggish"

    num_frames: int = 96
    num_mel_bins: int = 64
    stage_channels: list[list[int]] | tuple = ((64,), (128,), (256, 256), (512, 512))
    hidden_sizes: list[int] | tuple[int, ...] = (4096, 4096)
    embedding_size: int = 128
    postprocess: bool = False
    quantize_min: float = -2.0
    quantize_max: float = 2.0
    classifier_hidden_size: int = 1024
    classifier_dropout: float = 0.5
    batch_norm_eps: float = 1e-5
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.id2label is None:
            kwargs.setdefault("num_labels", 527)  # the AudioSet ontology
        self.stage_channels = [list(channels) for channels in self.stage_channels]
        self.hidden_sizes = list(self.hidden_sizes)
        if not self.stage_channels or any(not channels for channels in self.stage_channels):
            raise ValueError(
                f"`stage_channels` must be a non-empty list of non-empty lists, got {self.stage_channels}"
            )
        downsampling = 2 ** len(self.stage_channels)
        if self.num_frames % downsampling or self.num_mel_bins % downsampling:
            raise ValueError(
                f"`num_frames` ({self.num_frames}) and `num_mel_bins` ({self.num_mel_bins}) must be divisible by "
                f"2 ** len(stage_channels) = {downsampling}"
            )
        if self.quantize_min >= self.quantize_max:
            raise ValueError(
                f"`quantize_min` ({self.quantize_min}) must be smaller than `quantize_max` ({self.quantize_max})"
            )
        super().__post_init__(**kwargs)

    @property
    def flattened_size(self) -> int:
        """Width of the flattened output of the last convolution stage (12288 for VGGish)."""
        downsampling = 2 ** len(self.stage_channels)
        return (
            self.stage_channels[-1][-1]
            * (self.num_frames // downsampling)
            * (self.num_mel_bins // downsampling)
        )


__all__ = ["VGGishConfig"]
