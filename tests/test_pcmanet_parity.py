"""Official PCMANet checkpoints, converted by our script, reproduce the official outputs."""

import json

import pytest
import torch
from parity_weights import assert_holds_vggish, deterministic_state_dict, save_vggish
from safetensors.torch import load_file
from transformers import AutoModel

from avs_models.models.pcmanet.convert_pcmanet_original_to_hf import main as convert

# Parameters of the official models' state dicts (unused branches included), as counted upstream.
OFFICIAL_PARAMETER_COUNTS = {
    "pcmanet_resnet50_s4": 65_750_596,
    "pcmanet_pvtv2b5_s4": 95_068_740,
    "pcmanet_resnet50_avss": 65_721_052,
}


@pytest.mark.parametrize("variant", sorted(OFFICIAL_PARAMETER_COUNTS))
def test_converted_checkpoint_matches_official_outputs(variant, parity_dir, tmp_path):
    fixture = parity_dir / variant
    meta = json.loads((fixture / "meta.json").read_text())
    tensors = load_file(fixture / "tensors.safetensors")
    official_state_dict = deterministic_state_dict(meta["state_dict_spec"])
    torch.save(official_state_dict, tmp_path / "official.pth")

    arguments = ["--checkpoint", str(tmp_path / "official.pth"), "--output-dir", str(tmp_path / "converted")]
    if variant == "pcmanet_resnet50_s4":  # also attach a VGGish encoder
        arguments += save_vggish(tmp_path / "vggish")
    convert(arguments)
    model = AutoModel.from_pretrained(tmp_path / "converted").eval()
    if variant == "pcmanet_resnet50_s4":
        assert_holds_vggish(model, tmp_path / "vggish")

    clips, frames = meta["clips"], meta["frames_per_clip"]
    inputs = {
        "pixel_values": tensors["images"].view(clips, frames, 3, 224, 224),
        "audio_embeds": tensors["audio"].view(clips, frames, -1),
    }
    if "temporal_mask_flags" in tensors:
        inputs["frame_mask"] = tensors["temporal_mask_flags"].view(clips, frames)
    with torch.no_grad():
        output = model(**inputs)

    stride = meta["output_stride"]
    for index, logits in enumerate([output.logits, *output.auxiliary_logits], start=1):
        ours = logits.flatten(0, 1)[:, :, ::stride, ::stride]
        print(f"{variant} out{index}: max |diff| {(ours - tensors[f'out{index}_strided']).abs().max():.3e}")
        torch.testing.assert_close(ours, tensors[f"out{index}_strided"], atol=1e-3, rtol=0, msg=f"out{index}")
    if meta["kept_token_ratios_stage4_3_2"] is not None:
        torch.testing.assert_close(
            output.kept_token_ratios, torch.tensor(meta["kept_token_ratios_stage4_3_2"]), atol=1e-6, rtol=0
        )

    # Every official parameter is either in our model or in a branch the official forward never runs.
    unused = [
        key
        for key, _, _ in meta["state_dict_spec"]
        if key.startswith(("resnet.layer3_2.", "resnet.layer4_2.", "gf4.seq2."))
        and not key.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    unused_parameters = sum(official_state_dict[key].numel() for key in unused)
    ours = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("audio_encoder."))
    assert ours + unused_parameters == OFFICIAL_PARAMETER_COUNTS[variant]
