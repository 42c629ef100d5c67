"""BEATs: Kaldi fbank, attention, models, Auto classes, conversion of official-format checkpoints, feature extractor."""

import itertools
import json
import math

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F
from parity_weights import deterministic_tensor
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
)

import avs_models  # noqa: F401  (registers the Auto classes)
from avs_models.models.beats import (
    BeatsConfig,
    BeatsFeatureExtractor,
    BeatsForAudioClassification,
    BeatsModel,
)
from avs_models.models.beats.convert_beats_original_to_hf import convert_beats_checkpoint, main
from avs_models.models.beats.modeling_beats import (
    BeatsAttention,
    BeatsRelativePositionBias,
    kaldi_fbank,
    relative_position_buckets,
)
from avs_models.models.label_names import AUDIOSET_CLASSES

RATE = 16000
TINY = {
    "num_mel_bins": 16,
    "patch_size": 4,
    "patch_embedding_dim": 12,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "positional_conv_kernel_size": 8,
    "positional_conv_groups": 4,
    "relative_position_buckets": 16,
    "relative_position_max_distance": 32,
    "num_labels": 5,
}
# The same tiny model as an official `cfg` dict (official field names).
TINY_ORIGINAL_CFG = {
    "input_patch_size": 4,
    "embed_dim": 12,
    "conv_bias": False,
    "encoder_layers": 2,
    "encoder_embed_dim": 16,
    "encoder_ffn_embed_dim": 32,
    "encoder_attention_heads": 2,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "deep_norm": True,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.05,
    "dropout_input": 0.0,
    "layer_wise_gradient_decay_ratio": 0.6,
    "conv_pos": 8,
    "conv_pos_groups": 4,
    "relative_position_embedding": True,
    "num_buckets": 16,
    "max_distance": 32,
    "gru_rel_pos": True,
    "finetuned_model": True,
    "predictor_dropout": 0.0,
    "predictor_class": 5,
}
# The public AudioSet-finetuned checkpoint's cfg (BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt*.pt).
FULL_ORIGINAL_CFG = {
    **TINY_ORIGINAL_CFG,
    "input_patch_size": 16,
    "embed_dim": 512,
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "num_buckets": 320,
    "max_distance": 800,
    "predictor_class": 527,
}
TINY_SAMPLES = 4000  # 23 fbank frames: 5 x 4 patches of 4 x 4


def chirp(seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * (200 + 800 * t) * t)).astype(np.float32)


def waveforms(*shape: int) -> torch.Tensor:
    return 0.3 * torch.randn(*shape, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- Kaldi fbank


def numpy_kaldi_fbank(waveform: np.ndarray, num_mel_bins: int) -> np.ndarray:
    """Kaldi's fbank formulas frame by frame in float64 (25 ms / 10 ms frames at 16 kHz, FFT 512)."""
    frame_length, frame_shift, fft_size = 400, 160, 512
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame_length) / (frame_length - 1))) ** 0.85

    def mel(hertz):
        return 1127.0 * np.log(1.0 + hertz / 700.0)

    low, step = mel(20.0), (mel(RATE / 2) - mel(20.0)) / (num_mel_bins + 1)
    banks = np.zeros((num_mel_bins, fft_size // 2 + 1))
    for band in range(num_mel_bins):
        left, center, right = low + band * step, low + (band + 1) * step, low + (band + 2) * step
        for fft_bin in range(fft_size // 2):  # Kaldi gives the Nyquist bin no weight
            bin_mel = mel(fft_bin * RATE / fft_size)
            if left < bin_mel <= center:
                banks[band, fft_bin] = (bin_mel - left) / (center - left)
            elif center < bin_mel < right:
                banks[band, fft_bin] = (right - bin_mel) / (right - center)
    rows = []
    for start in range(0, len(waveform) - frame_length + 1, frame_shift):
        frame = waveform[start : start + frame_length].astype(np.float64)
        frame = frame - frame.mean()
        frame = frame - 0.97 * np.concatenate([frame[:1], frame[:-1]])
        power = np.abs(np.fft.rfft(frame * window, n=fft_size)) ** 2
        rows.append(np.log(np.maximum(banks @ power, np.finfo(np.float32).eps)))
    return np.array(rows)


@pytest.mark.parametrize("num_mel_bins", [16, 128])
def test_kaldi_fbank_matches_reference_formulas(num_mel_bins):
    # Broadband signals: every band stays far above the float32 rounding noise of the FFT.
    noise = np.random.default_rng(0).standard_normal((2, RATE)).astype(np.float32)
    waveform = (np.stack([chirp(1.0), 0.2 * chirp(1.0)[::-1]]) + 0.05 * noise) * 2**15
    fbank = kaldi_fbank(torch.from_numpy(waveform), RATE, num_mel_bins, 400, 160)
    assert fbank.shape == (2, 98, num_mel_bins) and fbank.dtype == torch.float32
    for row, clip in zip(fbank, waveform):
        expected = numpy_kaldi_fbank(clip, num_mel_bins)
        # Like Kaldi, the model lays out the mel grid in float32; the narrowest (lowest) bands
        # then differ from this float64 reference by up to ~5e-4 in log energy.
        np.testing.assert_allclose(row.numpy(), expected, atol=1e-3)
        assert np.abs(row.numpy() - expected).mean() < 2e-5


def test_fbank_features_scale_normalise_and_floor_silence():
    model = BeatsModel(BeatsConfig(**TINY))
    noise = np.random.default_rng(0).standard_normal(RATE // 2).astype(np.float32)
    waveform = torch.from_numpy(chirp(0.5) + 0.05 * noise)[None]
    expected = (numpy_kaldi_fbank(waveform[0].numpy() * 32768.0, 16) - 15.41663) / (2 * 6.55582)
    np.testing.assert_allclose(model.fbank_features(waveform)[0].numpy(), expected, atol=2e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = model.fbank_features(waveform)
    assert under_autocast.dtype == torch.float32
    assert torch.equal(under_autocast, model.fbank_features(waveform))
    silent = model.fbank_features(torch.zeros(1, TINY_SAMPLES))
    floor = (math.log(torch.finfo(torch.float32).eps) - 15.41663) / (2 * 6.55582)
    torch.testing.assert_close(silent, torch.full_like(silent, floor))


# ---------------------------------------------------------------- attention


def reference_buckets(num_tokens: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    half, exact = num_buckets // 2, num_buckets // 4
    buckets = torch.zeros(num_tokens, num_tokens, dtype=torch.long)
    for query in range(num_tokens):
        for key in range(num_tokens):
            distance = abs(key - query)
            if distance < exact:
                bucket = distance
            else:
                bucket = min(
                    half - 1,
                    exact + int(math.log(distance / exact) / math.log(max_distance / exact) * (half - exact)),
                )
            buckets[query, key] = bucket + (half if key > query else 0)
    return buckets


@pytest.mark.parametrize(("num_buckets", "max_distance"), [(320, 800), (16, 32), (16, 10)])
def test_relative_position_buckets(num_buckets, max_distance):
    buckets = relative_position_buckets(60, num_buckets, max_distance, torch.device("cpu"))
    assert torch.equal(buckets, reference_buckets(60, num_buckets, max_distance))
    assert buckets[0, 1] == num_buckets // 2 + 1 and buckets[1, 0] == 1


@pytest.mark.parametrize("gated", [True, False])
def test_attention_matches_explicit_softmax_reference(gated):
    config = BeatsConfig(**TINY, gated_relative_position_bias=gated)
    torch.manual_seed(0)
    attention = BeatsAttention(config).eval()
    position_table = BeatsRelativePositionBias(config)
    with torch.no_grad():
        for parameter in [*attention.parameters(), *position_table.parameters()]:
            parameter.normal_()
    hidden_states = torch.randn(3, 20, config.hidden_size)
    position_bias = position_table(20, hidden_states.device)
    with torch.no_grad():
        output, no_probabilities = attention(hidden_states, position_bias)
        eager_output, probabilities = attention(hidden_states, position_bias, output_attentions=True)

        heads, head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads

        def split(x):
            return x.view(3, 20, heads, head_dim).transpose(1, 2)

        query, key, value = (
            split(F.linear(hidden_states, proj.weight, proj.bias))
            for proj in (attention.q_proj, attention.k_proj, attention.v_proj)
        )
        bias = position_bias[None]
        if gated:
            gate_logits = F.linear(query, attention.gate_projection.weight, attention.gate_projection.bias)
            gate_a = torch.sigmoid(gate_logits[..., :4].sum(-1, keepdim=True))
            gate_b = torch.sigmoid(gate_logits[..., 4:].sum(-1, keepdim=True))
            bias = (gate_a * (gate_b * attention.gate_scale - 1) + 2) * bias
        scores = query @ key.transpose(-1, -2) * head_dim**-0.5 + bias
        expected = (scores.softmax(dim=-1) @ value).transpose(1, 2).reshape(3, 20, -1)
        expected = F.linear(expected, attention.out_proj.weight, attention.out_proj.bias)
    # SDPA (the default) and the explicit softmax that returns the probabilities agree.
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eager_output, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probabilities, scores.softmax(dim=-1), atol=1e-6, rtol=1e-5)
    assert no_probabilities is None


# ---------------------------------------------------------------- models


def test_model_shapes_and_leading_dims():
    model = BeatsModel(BeatsConfig(**TINY)).eval()
    batched_input = waveforms(2, 3, TINY_SAMPLES)
    with torch.no_grad():
        batched = model(batched_input, output_hidden_states=True)
        flat = model(batched_input.flatten(0, 1))
    assert batched.last_hidden_state.shape == (2, 3, 20, 16) and batched.embeddings.shape == (2, 3, 16)
    assert flat.last_hidden_state.shape == (6, 20, 16) and flat.hidden_states is None
    torch.testing.assert_close(batched.embeddings.flatten(0, 1), flat.embeddings)
    torch.testing.assert_close(flat.embeddings, flat.last_hidden_state.mean(dim=1))
    assert len(batched.hidden_states) == 3 and batched.hidden_states[0].shape == (2, 3, 20, 16)
    last_hidden_state, embeddings = model(batched_input, return_dict=False)
    assert last_hidden_state.shape == (2, 3, 20, 16) and embeddings.shape == (2, 3, 16)


def test_auto_model_round_trip(tmp_path):
    config = AutoConfig.for_model("beats", **TINY)
    assert isinstance(config, BeatsConfig)
    model = AutoModel.from_config(config).eval()
    assert isinstance(model, BeatsModel)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    inputs = waveforms(2, TINY_SAMPLES)
    with torch.no_grad():
        assert torch.equal(model(inputs).last_hidden_state, reloaded(inputs).last_hidden_state)


def test_audio_classification_shapes_loss_and_round_trip(tmp_path):
    model = BeatsForAudioClassification(BeatsConfig(**TINY)).eval()
    inputs = waveforms(2, 3, TINY_SAMPLES)
    labels = torch.randint(0, 2, (2, 3, 5)).float()
    with torch.no_grad():
        output = model(inputs, labels=labels, output_hidden_states=True)
        token_logits = model.classifier(model.beats(inputs).last_hidden_state)
    assert output.logits.shape == (2, 3, 5) and output.embeddings.shape == (2, 3, 16)
    torch.testing.assert_close(output.logits, token_logits.mean(dim=-2))
    assert output.loss.ndim == 0 and torch.isfinite(output.loss)
    torch.testing.assert_close(output.loss, F.binary_cross_entropy_with_logits(output.logits, labels))
    assert len(output.hidden_states) == 3
    with pytest.raises(ValueError, match="labels"):
        model(inputs, labels=labels[..., :2])

    model.save_pretrained(tmp_path)
    reloaded = AutoModelForAudioClassification.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, BeatsForAudioClassification)
    with torch.no_grad():
        assert torch.equal(reloaded(inputs).logits, output.logits)
        # The encoder alone loads from the classifier's folder.
        assert torch.equal(AutoModel.from_pretrained(tmp_path).eval()(inputs).embeddings, output.embeddings)


def test_pre_norm_variant_and_no_position_bias():
    inputs = waveforms(2, TINY_SAMPLES)
    for overrides in (
        {"deep_norm": False, "layer_norm_first": True},
        {"use_relative_position_bias": False, "gated_relative_position_bias": False},
    ):
        model = BeatsModel(BeatsConfig(**TINY, **overrides)).eval()
        with torch.no_grad():
            output = model(inputs, output_hidden_states=True)
        assert (
            output.last_hidden_state.shape == (2, 20, 16) and torch.isfinite(output.last_hidden_state).all()
        )
    # Pre-norm models end with the encoder's layer norm: zero mean over channels per token.
    torch.testing.assert_close(
        BeatsModel(BeatsConfig(**TINY, deep_norm=False, layer_norm_first=True))(
            inputs
        ).last_hidden_state.mean(-1),
        torch.zeros(2, 20),
        atol=1e-5,
        rtol=0,
    )


def test_layer_gradient_decay_scales_gradients_only():
    inputs = waveforms(2, TINY_SAMPLES)
    gradients, outputs = {}, {}
    for decay in (1.0, 0.5):
        torch.manual_seed(0)
        model = BeatsModel(BeatsConfig(**TINY, layerdrop=0.0, layer_gradient_decay=decay)).train()
        output = model(inputs).last_hidden_state
        output.square().sum().backward()
        outputs[decay] = output.detach()
        gradients[decay] = {name: parameter.grad for name, parameter in model.named_parameters()}
    assert torch.equal(outputs[1.0], outputs[0.5])
    # Two layers: parameters before the first layer see the factor twice, the last layer not at all.
    torch.testing.assert_close(
        gradients[0.5]["encoder.positional_embedding.bias"],
        0.25 * gradients[1.0]["encoder.positional_embedding.bias"],
    )
    torch.testing.assert_close(
        gradients[0.5]["encoder.layers.1.fc2.weight"], gradients[1.0]["encoder.layers.1.fc2.weight"]
    )


def test_layerdrop_skips_layers_in_training_only():
    model = BeatsModel(BeatsConfig(**TINY, layerdrop=0.9))
    inputs = waveforms(1, TINY_SAMPLES)
    torch.manual_seed(0)
    with torch.no_grad():
        trained = model.train()(inputs, output_hidden_states=True).hidden_states
        evaluated = model.eval()(inputs, output_hidden_states=True).hidden_states
    assert any(torch.equal(before, after) for before, after in itertools.pairwise(trained))
    assert not any(torch.equal(before, after) for before, after in itertools.pairwise(evaluated))


@pytest.mark.parametrize(
    ("inputs", "error", "match"),
    [
        (torch.zeros(TINY_SAMPLES), ValueError, r"\[N, samples\] or \[B, T, samples\]"),
        (torch.zeros(1, 1, 1, TINY_SAMPLES), ValueError, "input_values"),
        (torch.zeros(2, 879), ValueError, "at least 880"),
        (torch.zeros(2, TINY_SAMPLES, dtype=torch.int16), TypeError, "float"),
        (np.zeros((2, TINY_SAMPLES), dtype=np.float32), TypeError, "torch.Tensor"),
    ],
)
def test_model_input_errors(inputs, error, match):
    with pytest.raises(error, match=match):
        BeatsModel(BeatsConfig(**TINY))(inputs)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"deep_norm": True, "layer_norm_first": True}, "exclude each other"),
        ({"hidden_size": 15}, "num_attention_heads"),
        ({"positional_conv_groups": 3, "num_attention_heads": 1}, "positional_conv_groups"),
        ({"use_relative_position_bias": False}, "gated_relative_position_bias"),
        ({"hidden_act": "glu"}, "hidden_act"),
        ({"hidden_dropout": 1.0}, "hidden_dropout"),
        ({"patch_size": 32}, "num_mel_bins"),
        ({"patch_size": -1}, "patch_size"),
        ({"fbank_std": 0.0}, "fbank_std"),
        ({"relative_position_max_distance": 4}, "relative_position_max_distance"),
    ],
)
def test_config_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        BeatsConfig(**{**TINY, **overrides})


def test_config_defaults_are_the_public_checkpoint():
    config = BeatsConfig()
    assert config.num_labels == 527 and config.min_num_samples == 2800
    assert BeatsConfig.from_original_config(FULL_ORIGINAL_CFG).to_dict() == config.to_dict()
    # Fields missing from a cfg take the official defaults, not ours.
    assert BeatsConfig.from_original_config({"input_patch_size": 16}, num_labels=527).deep_norm is False
    with pytest.raises(ValueError, match="glu"):
        BeatsConfig.from_original_config({**FULL_ORIGINAL_CFG, "activation_fn": "glu"})


# ---------------------------------------------------------------- conversion


def original_state_dict(cfg: dict) -> dict[str, torch.Tensor]:
    """An official-format BEATs state dict (official key names and shapes) with deterministic values."""
    hidden, patch_dim, heads = cfg["encoder_embed_dim"], cfg["embed_dim"], cfg["encoder_attention_heads"]
    ffn, patch, kernel = cfg["encoder_ffn_embed_dim"], cfg["input_patch_size"], cfg["conv_pos"]
    spec = {
        "post_extract_proj.weight": (hidden, patch_dim),
        "post_extract_proj.bias": (hidden,),
        "patch_embedding.weight": (patch_dim, 1, patch, patch),
        "encoder.pos_conv.0.bias": (hidden,),
        "encoder.pos_conv.0.weight_g": (1, 1, kernel),
        "encoder.pos_conv.0.weight_v": (hidden, hidden // cfg["conv_pos_groups"], kernel),
    }
    for layer in range(cfg["encoder_layers"]):
        prefix = f"encoder.layers.{layer}."
        for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
            spec[f"{prefix}self_attn.{name}.weight"] = (hidden, hidden)
            spec[f"{prefix}self_attn.{name}.bias"] = (hidden,)
        spec[f"{prefix}self_attn.grep_a"] = (1, heads, 1, 1)
        spec[f"{prefix}self_attn.grep_linear.weight"] = (8, hidden // heads)
        spec[f"{prefix}self_attn.grep_linear.bias"] = (8,)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            spec[f"{prefix}{norm}.weight"] = spec[f"{prefix}{norm}.bias"] = (hidden,)
        spec[f"{prefix}fc1.weight"], spec[f"{prefix}fc1.bias"] = (ffn, hidden), (ffn,)
        spec[f"{prefix}fc2.weight"], spec[f"{prefix}fc2.bias"] = (hidden, ffn), (hidden,)
    spec["encoder.layer_norm.weight"] = spec["encoder.layer_norm.bias"] = (hidden,)
    spec["layer_norm.weight"] = spec["layer_norm.bias"] = (patch_dim,)
    if cfg["finetuned_model"]:
        spec["predictor.weight"] = (cfg["predictor_class"], hidden)
        spec["predictor.bias"] = (cfg["predictor_class"],)
    state_dict = {key: deterministic_tensor(key, shape) for key, shape in spec.items()}
    # The official model shares one table between all layers; its state dict repeats it per layer.
    shared = deterministic_tensor("relative_attention_bias", (cfg["num_buckets"], heads))
    for layer in range(cfg["encoder_layers"]):
        state_dict[f"encoder.layers.{layer}.self_attn.relative_attention_bias.weight"] = shared
    return state_dict


def reference_forward(state_dict: dict, cfg: dict, fbank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The official fine-tuned BEATs (post-norm, deep norm, gated bias) written out with its key names.

    `fbank`: normalised `[N, frames, mel]`. Returns (mean hidden state, mean per-token logits).
    """

    def linear(x, name):
        return F.linear(x, state_dict[f"{name}.weight"], state_dict[f"{name}.bias"])

    def layer_norm(x, name):
        return F.layer_norm(x, x.shape[-1:], state_dict[f"{name}.weight"], state_dict[f"{name}.bias"])

    patch = cfg["input_patch_size"]
    x = F.conv2d(fbank[:, None], state_dict["patch_embedding.weight"], stride=patch)
    x = x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 2)
    x = linear(layer_norm(x, "layer_norm"), "post_extract_proj")
    weight = torch._weight_norm(
        state_dict["encoder.pos_conv.0.weight_v"], state_dict["encoder.pos_conv.0.weight_g"], 2
    )
    kernel = cfg["conv_pos"]
    conv = F.conv1d(
        x.transpose(1, 2),
        weight,
        state_dict["encoder.pos_conv.0.bias"],
        padding=kernel // 2,
        groups=cfg["conv_pos_groups"],
    )
    x = layer_norm(x + F.gelu(conv[..., : x.shape[1]]).transpose(1, 2), "encoder.layer_norm")

    batch, tokens, hidden = x.shape
    heads = cfg["encoder_attention_heads"]
    head_dim = hidden // heads
    buckets = reference_buckets(tokens, cfg["num_buckets"], cfg["max_distance"])
    position_bias = state_dict["encoder.layers.0.self_attn.relative_attention_bias.weight"][buckets].permute(
        2, 0, 1
    )
    alpha = (2 * cfg["encoder_layers"]) ** 0.25
    for layer in range(cfg["encoder_layers"]):
        prefix = f"encoder.layers.{layer}."
        q, k, v = (
            linear(x, f"{prefix}self_attn.{name}").view(batch, tokens, heads, head_dim).transpose(1, 2)
            for name in ("q_proj", "k_proj", "v_proj")
        )
        gate = linear(q, f"{prefix}self_attn.grep_linear")
        gate_a = torch.sigmoid(gate[..., :4].sum(-1, keepdim=True))
        gate_b = torch.sigmoid(gate[..., 4:].sum(-1, keepdim=True))
        gate = gate_a * (gate_b * state_dict[f"{prefix}self_attn.grep_a"] - 1.0) + 2.0
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + gate * position_bias
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, tokens, hidden)
        x = layer_norm(
            x * alpha + linear(attended, f"{prefix}self_attn.out_proj"), f"{prefix}self_attn_layer_norm"
        )
        feed_forward = linear(F.gelu(linear(x, f"{prefix}fc1")), f"{prefix}fc2")
        x = layer_norm(x * alpha + feed_forward, f"{prefix}final_layer_norm")
    return x.mean(dim=1), linear(x, "predictor").mean(dim=1)


def write_original_checkpoint(path, cfg, state_dict=None, **extra):
    state_dict = original_state_dict(cfg) if state_dict is None else state_dict
    torch.save({"cfg": cfg, "model": state_dict, **extra}, path)
    return path


def test_converted_checkpoint_matches_reference_forward(tmp_path):
    checkpoint = write_original_checkpoint(tmp_path / "beats.pt", TINY_ORIGINAL_CFG)
    labels_csv = tmp_path / "class_labels_indices.csv"
    labels_csv.write_text("index,mid,display_name\n" + "".join(f"{i},/m/{i},sound {i}\n" for i in range(5)))
    main(
        [
            "--checkpoint",
            str(checkpoint),
            "--output-dir",
            str(tmp_path / "hf"),
            "--labels-csv",
            str(labels_csv),
        ]
    )
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    assert (tmp_path / "hf" / "preprocessor_config.json").is_file()
    model = AutoModelForAudioClassification.from_pretrained(tmp_path / "hf").eval()
    assert isinstance(model, BeatsForAudioClassification)
    assert model.config.id2label[3] == "sound 3" and model.config.layer_gradient_decay == 0.6
    assert isinstance(AutoFeatureExtractor.from_pretrained(tmp_path / "hf"), BeatsFeatureExtractor)

    inputs = waveforms(2, TINY_SAMPLES)
    with torch.no_grad():
        output = model(inputs)
        embeddings, logits = reference_forward(
            original_state_dict(TINY_ORIGINAL_CFG), TINY_ORIGINAL_CFG, model.beats.fbank_features(inputs)
        )
    torch.testing.assert_close(output.embeddings, embeddings, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.logits, logits, atol=1e-5, rtol=1e-5)


def test_conversion_of_label_dict_and_pretrained_checkpoints(tmp_path):
    # AudioSet machine ids are named through the bundled ontology; unknown ids stay as they are.
    label_dict = {0: "/m/05tny_", 1: "/m/0k4j", 2: "/m/09x0r", 3: "/m/003", 4: "/m/004"}
    checkpoint = write_original_checkpoint(tmp_path / "ft.pt", TINY_ORIGINAL_CFG, label_dict=label_dict)
    model = convert_beats_checkpoint(checkpoint, tmp_path / "ft")
    assert model.config.id2label == {0: "Bark", 1: "Car", 2: "Speech", 3: "/m/003", 4: "/m/004"}

    pretrained_cfg = {**TINY_ORIGINAL_CFG, "finetuned_model": False}
    checkpoint = write_original_checkpoint(tmp_path / "pt.pt", pretrained_cfg)
    encoder = convert_beats_checkpoint(checkpoint, tmp_path / "pt")
    assert type(encoder) is BeatsModel
    reloaded = AutoModel.from_pretrained(tmp_path / "pt").eval()
    inputs = waveforms(1, TINY_SAMPLES)
    with torch.no_grad():
        assert torch.equal(reloaded(inputs).embeddings, encoder(inputs).embeddings)


def test_conversion_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        convert_beats_checkpoint(tmp_path / "missing.pt", tmp_path / "out")
    torch.save(original_state_dict(TINY_ORIGINAL_CFG), tmp_path / "bare.pt")
    with pytest.raises(TypeError, match="model"):
        convert_beats_checkpoint(tmp_path / "bare.pt", tmp_path / "out")

    state_dict = original_state_dict(TINY_ORIGINAL_CFG)
    state_dict["encoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"unexpected keys.*encoder\.extra\.weight"):
        convert_beats_checkpoint(
            write_original_checkpoint(tmp_path / "a.pt", TINY_ORIGINAL_CFG, state_dict), tmp_path / "out"
        )

    state_dict = original_state_dict(TINY_ORIGINAL_CFG)
    del state_dict["encoder.layers.1.fc2.bias"]
    with pytest.raises(ValueError, match=r"missing \['beats\.encoder\.layers\.1\.fc2\.bias'\]"):
        convert_beats_checkpoint(
            write_original_checkpoint(tmp_path / "b.pt", TINY_ORIGINAL_CFG, state_dict), tmp_path / "out"
        )

    state_dict = original_state_dict(TINY_ORIGINAL_CFG)
    state_dict["encoder.layers.1.self_attn.relative_attention_bias.weight"] = torch.zeros(16, 2)
    with pytest.raises(ValueError, match="shares one relative position bias"):
        convert_beats_checkpoint(
            write_original_checkpoint(tmp_path / "c.pt", TINY_ORIGINAL_CFG, state_dict), tmp_path / "out"
        )

    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("index,mid,display_name\n0,/m/0,zero\n")
    checkpoint = write_original_checkpoint(tmp_path / "d.pt", TINY_ORIGINAL_CFG)
    with pytest.raises(ValueError, match="names 1 classes but the classifier has 5"):
        convert_beats_checkpoint(checkpoint, tmp_path / "out", labels_csv=labels_csv)
    pretrained = write_original_checkpoint(tmp_path / "e.pt", {**TINY_ORIGINAL_CFG, "finetuned_model": False})
    with pytest.raises(ValueError, match="labels_csv"):
        convert_beats_checkpoint(pretrained, tmp_path / "out", labels_csv=labels_csv)


# ---------------------------------------------------------------- feature extractor


def test_feature_extractor_segments_a_real_wav(tmp_path):
    left, right = chirp(2.5), 0.3 * chirp(2.5)[::-1]
    path = tmp_path / "clip.wav"
    soundfile.write(path, np.stack([left, right], axis=1), RATE, subtype="PCM_16")
    as_int16, rate = soundfile.read(path, dtype="int16")
    as_float, _ = soundfile.read(path, dtype="float32")
    assert as_int16.shape == (40000, 2)
    feature_extractor = BeatsFeatureExtractor()
    segments = feature_extractor(as_int16, sampling_rate=rate, return_tensors="pt")["input_values"]
    assert segments.shape == (2, RATE) and segments.dtype == torch.float32
    expected = as_int16.astype(np.float64).mean(axis=1)[: 2 * RATE] / 32768.0
    np.testing.assert_allclose(segments.flatten().numpy(), expected, atol=1e-7)
    from_float = feature_extractor(as_float, sampling_rate=rate)["input_values"]
    np.testing.assert_allclose(from_float, segments.numpy(), atol=1e-6)

    model = BeatsModel(BeatsConfig(**TINY)).eval()
    with torch.no_grad():
        assert model(segments).embeddings.shape == (2, 16)


def test_feature_extractor_num_segments_and_batches():
    feature_extractor = BeatsFeatureExtractor()
    padded = feature_extractor(chirp(2.5), sampling_rate=RATE, num_segments=5)["input_values"]
    assert padded.shape == (5, RATE)
    np.testing.assert_array_equal(padded.reshape(-1)[:40000], chirp(2.5))
    assert not padded.reshape(-1)[40000:].any()
    trimmed = feature_extractor(chirp(2.5), sampling_rate=RATE, num_segments=1)["input_values"]
    np.testing.assert_array_equal(trimmed, chirp(1.0)[None])
    assert BeatsFeatureExtractor(num_segments=3)(chirp(0.2), sampling_rate=RATE)["input_values"].shape == (
        3,
        RATE,
    )

    batch = feature_extractor([chirp(3.0), chirp(1.5)], sampling_rate=RATE, return_tensors="pt")
    assert batch["input_values"].shape == (2, 3, RATE)
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert not batch["input_values"][1, 1:].any()
    single = feature_extractor(chirp(1.5), sampling_rate=RATE, return_attention_mask=True)
    assert single["attention_mask"].tolist() == [1]


def test_feature_extractor_resamples_other_rates(tmp_path):
    path = tmp_path / "clip_44k.wav"
    soundfile.write(path, chirp(2.0, rate=44100), 44100, subtype="FLOAT")
    waveform, rate = soundfile.read(path)
    segments = BeatsFeatureExtractor()(waveform, sampling_rate=rate)["input_values"]
    assert segments.shape == (2, RATE)
    # A resampled chirp stays close to the chirp computed at 16 kHz (away from the filter's edges).
    assert np.abs(segments.reshape(-1)[1000:-1000] - chirp(2.0)[1000:-1000]).max() < 0.02


@pytest.mark.parametrize(
    ("audio", "kwargs", "error", "match"),
    [
        (chirp(2.0), {}, ValueError, "sampling_rate"),
        (chirp(2.0), {"sampling_rate": 0}, ValueError, "sampling_rate"),
        (chirp(2.0), {"sampling_rate": -16000}, ValueError, "sampling_rate"),
        (chirp(2.0), {"sampling_rate": 16000.5}, ValueError, "sampling_rate"),
        (chirp(2.0), {"sampling_rate": True}, ValueError, "sampling_rate"),
        (np.zeros(0, dtype=np.float32), {"sampling_rate": RATE}, ValueError, "empty"),
        ([], {"sampling_rate": RATE}, ValueError, "empty"),
        (np.zeros((2, 2, RATE), dtype=np.float32), {"sampling_rate": RATE}, ValueError, "1-D"),
        (np.float32(0.5), {"sampling_rate": RATE}, ValueError, "1-D"),
        (chirp(0.9), {"sampling_rate": RATE}, ValueError, "too short"),
        (np.array([np.nan] * RATE), {"sampling_rate": RATE}, ValueError, "NaN"),
        (np.ones(RATE, dtype=bool), {"sampling_rate": RATE}, TypeError, "dtype"),
        (chirp(2.0), {"sampling_rate": RATE, "num_segments": 0}, ValueError, "num_segments"),
        (chirp(2.0), {"sampling_rate": RATE, "padding": True}, TypeError, "padding"),
    ],
)
def test_feature_extractor_errors(audio, kwargs, error, match):
    with pytest.raises(error, match=match):
        BeatsFeatureExtractor()(audio, **kwargs)


def test_feature_extractor_round_trip(tmp_path):
    feature_extractor = BeatsFeatureExtractor(num_segments=5)
    feature_extractor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["feature_extractor_type"] == "BeatsFeatureExtractor" and saved["num_segments"] == 5
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "beats"}))
    reloaded = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert isinstance(reloaded, BeatsFeatureExtractor) and reloaded.num_segments == 5
    with pytest.raises(ValueError, match="segment_length"):
        BeatsFeatureExtractor(segment_length=0)


# ---------------------------------------------------------------- full size


@pytest.mark.slow
def test_full_size_converted_checkpoint_matches_reference(tmp_path):
    checkpoint = write_original_checkpoint(tmp_path / "beats.pt", FULL_ORIGINAL_CFG)
    model = convert_beats_checkpoint(checkpoint, tmp_path / "hf")
    converted = model.config.to_diff_dict()
    assert converted.pop("architectures") == ["BeatsForAudioClassification"]
    assert converted.pop("dtype") == "float32"
    # The converted folder carries its code, so it loads from the Hub without the package.
    assert converted.pop("auto_map")["AutoConfig"] == "configuration_beats.BeatsConfig"
    # A 527-class predictor without label ids or a label file is named with the AudioSet ontology.
    assert model.config.id2label == dict(enumerate(AUDIOSET_CLASSES))
    expected = BeatsConfig().to_diff_dict()
    for key in ("id2label", "label2id"):
        converted.pop(key), expected.pop(key)
    assert converted == expected
    inputs = torch.from_numpy(np.stack([chirp(1.0), 0.1 * chirp(1.0)[::-1]]))
    with torch.no_grad():
        output = model(inputs[:, None])
        embeddings, logits = reference_forward(
            torch.load(checkpoint, weights_only=True)["model"],
            FULL_ORIGINAL_CFG,
            model.beats.fbank_features(inputs),
        )
    assert output.logits.shape == (2, 1, 527) and output.embeddings.shape == (2, 1, 768)
    torch.testing.assert_close(output.embeddings[:, 0], embeddings, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(output.logits[:, 0], logits, atol=1e-4, rtol=1e-4)
