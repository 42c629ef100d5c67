"""The shared helper that rebuilds official state dicts for the parity tests follows the README recipe."""

import math
import zlib

import torch
from parity_weights import deterministic_state_dict


def test_recipe_rules():
    spec = [
        ["bn.num_batches_tracked", [], "int64"],
        ["bn.running_var", [64], "float32"],
        ["bn.running_mean", [64], "float32"],
        ["conv.weight", [8, 4, 3, 3], "float32"],
        ["output_conv1.3.weight", [8, 4, 3, 3], "float32"],
        ["bn.weight", [64], "float32"],
        ["bn.bias", [64], "float32"],
    ]
    state_dict = deterministic_state_dict(spec)
    assert list(state_dict) == [key for key, _, _ in spec]
    assert state_dict["bn.num_batches_tracked"].dtype == torch.int64
    assert state_dict["bn.num_batches_tracked"].item() == 0
    assert torch.all((state_dict["bn.running_var"] >= 1) & (state_dict["bn.running_var"] <= 1.1))

    generator = torch.Generator().manual_seed(zlib.crc32(b"conv.weight"))
    expected = torch.randn(8, 4, 3, 3, generator=generator) * math.sqrt(1 / 36)
    assert torch.equal(state_dict["conv.weight"], expected)
    generator = torch.Generator().manual_seed(zlib.crc32(b"output_conv1.3.weight"))
    expected = torch.randn(8, 4, 3, 3, generator=generator) * math.sqrt(1 / 36) * 8
    assert torch.equal(state_dict["output_conv1.3.weight"], expected)
    generator = torch.Generator().manual_seed(zlib.crc32(b"bn.weight"))
    assert torch.equal(state_dict["bn.weight"], 1 + 0.1 * torch.randn(64, generator=generator))
    generator = torch.Generator().manual_seed(zlib.crc32(b"bn.bias"))
    assert torch.equal(state_dict["bn.bias"], 0.1 * torch.randn(64, generator=generator))
    assert torch.equal(deterministic_state_dict(spec)["bn.bias"], state_dict["bn.bias"])
