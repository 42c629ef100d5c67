"""C3N parity with the official forward (fixtures made by the official code, deterministic weights).

For each fixture the official state dict is rebuilt from its `state_dict_spec`, saved with
`torch.save`, converted by the project's conversion script, loaded with `from_pretrained` and run
on the fixture's frames, VGGish embeddings, AudioSet logits and similarity matrix.
"""

import json

import pytest
import torch
from parity_weights import deterministic_state_dict
from safetensors.torch import load_file

from avs_models import (
    AutoModelForAudioVisualSegmentation,
    PannsConfig,
    PannsForAudioClassification,
    VGGishConfig,
    VGGishForAudioClassification,
)
from avs_models.models.c3n.convert_c3n_original_to_hf import main as convert_main
from avs_models.models.c3n.convert_c3n_original_to_hf import swin_relative_position_indices

FRAME_SIZE = 224


@pytest.mark.parametrize("variant", ["c3n_pvtv2b5_vggish_s4", "c3n_swinb_vggish_s4"])
def test_converted_checkpoint_matches_official_forward(parity_dir, tmp_path, variant):
    fixture = parity_dir / variant
    if not fixture.is_dir():
        pytest.skip(f"fixture {variant} not found in {parity_dir}")
    meta = json.loads((fixture / "meta.json").read_text())
    tensors = load_file(fixture / "tensors.safetensors")
    clips, frames = meta["clips"], meta["frames_per_clip"]

    checkpoint = tmp_path / "official.pth"
    official_state = deterministic_state_dict(meta["state_dict_spec"])
    torch.save(official_state, checkpoint)
    converted = tmp_path / "converted"
    convert_main(["--checkpoint", str(checkpoint), "--output-dir", str(converted)])
    model = AutoModelForAudioVisualSegmentation.from_pretrained(converted).eval()
    # Without --similarity-matrix the script embedded the ImageNet-1k and AudioSet class names.
    assert model.label_similarity.shape == (1000, 527) and model.label_similarity.std() > 0
    model.set_label_similarity(tensors["similarity_matrix"])
    if model.config.backbone_config.model_type == "swin":
        # The fixture recipe also overwrote Swin's relative-position index buffers (all zeros), and
        # the official forward ran with them; real checkpoints hold the standard index, which
        # Transformers recomputes. Use the recorded buffers so the forward is the same.
        with torch.no_grad():
            for key, index in swin_relative_position_indices(model).items():
                index.copy_(official_state[key].flatten())

    with torch.no_grad():
        output = model(
            pixel_values=tensors["images"].view(clips, frames, 3, FRAME_SIZE, FRAME_SIZE),
            audio_embeds=tensors["audio"].view(clips, frames, -1),
            audio_logits=tensors["audio_logits"].view(clips, frames, -1),
        )

    stride = meta["output_stride"]
    predicted = output.logits.flatten(0, 1)[:, :, ::stride, ::stride]
    expected = tensors["pred_strided"]
    assert predicted.shape == expected.shape
    max_diff = (predicted - expected).abs().max().item()
    print(f"{variant}: max |diff| {max_diff:.3e}")
    assert max_diff < 1e-3, f"{variant}: max |diff| {max_diff:.2e}"
    assert output.unified_labels.flatten().tolist() == meta["unified_visual_label"]


@pytest.mark.parametrize("encoder", ["vggish", "panns_cnn14"])
def test_converted_checkpoint_embeds_an_audio_encoder(parity_dir, tmp_path, encoder):
    fixture = parity_dir / "c3n_pvtv2b5_vggish_s4"
    if not fixture.is_dir():
        pytest.skip(f"fixture c3n_pvtv2b5_vggish_s4 not found in {parity_dir}")
    meta = json.loads((fixture / "meta.json").read_text())
    checkpoint = tmp_path / "official.pth"
    torch.save(deterministic_state_dict(meta["state_dict_spec"]), checkpoint)
    # Small encoders with the official model's audio widths (128-d embeddings, 527 AudioSet classes).
    if encoder == "vggish":
        audio_config = VGGishConfig(stage_channels=[[4], [8]], hidden_sizes=[16], classifier_hidden_size=16)
        audio_encoder, raw_audio = (
            VGGishForAudioClassification(audio_config),
            {"input_features": torch.randn(1, 2, 1, 96, 64)},
        )
    else:
        audio_config = PannsConfig(block_channels=[4, 4, 4, 4, 4, 8], embedding_size=128)
        audio_encoder, raw_audio = (
            PannsForAudioClassification(audio_config),
            {"input_values": torch.randn(1, 2, 16000)},
        )
    audio_encoder.save_pretrained(tmp_path / "audio")
    convert_main(
        [
            "--checkpoint",
            str(checkpoint),
            "--output-dir",
            str(tmp_path / "c3n"),
            "--audio-encoder-dir",
            str(tmp_path / "audio"),
        ]
    )
    model = AutoModelForAudioVisualSegmentation.from_pretrained(tmp_path / "c3n").eval()
    assert model.config.audio_config.model_type == encoder
    assert model.config.audio_score_activation == ("sigmoid" if encoder == "panns_cnn14" else "none")
    for key, value in audio_encoder.state_dict().items():
        assert torch.equal(model.audio_encoder.state_dict()[key], value), key
    pixel_values = torch.randn(1, 2, 3, FRAME_SIZE, FRAME_SIZE)
    with torch.no_grad():
        embeds, logits = model.encode_audio(*raw_audio.values(), next(iter(raw_audio)), 1, 2)
        from_raw = model(pixel_values=pixel_values, **raw_audio)
    assert embeds.shape == (1, 2, 128) and logits.shape == (1, 2, 527)
    assert from_raw.logits.shape == (1, 2, 1, FRAME_SIZE, FRAME_SIZE)
