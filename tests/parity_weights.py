"""Deterministic stand-ins for official checkpoints, rebuilt from a parity fixture's `state_dict_spec`.

The recipe is the one in the parity fixtures' README ("How the weights were made"), so a state
dict rebuilt here equals the one the official code ran with when the fixture was recorded. Also
the VGGish folder that parity tests attach with a converter's `--vggish-dir`.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from avs_models import VGGishConfig, VGGishModel

# Output convolutions whose weights the recipe scales up (so PCMANet's confidence masks are partly on).
_SCALED_KEY = re.compile(r"^output_conv\d\.3\.weight$")
_SCALED_KEY_FACTOR = 8.0


def deterministic_tensor(key: str, shape: Sequence[int], dtype: str = "float32") -> torch.Tensor:
    """The tensor the recipe gives to `key` (generator seeded with `zlib.crc32(key)`)."""
    shape = tuple(int(size) for size in shape)
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    name = key.rsplit(".", 1)[-1]
    if name == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.int64)
    if name == "running_var":
        tensor = 1 + 0.1 * torch.rand(shape, generator=generator)
    elif name == "running_mean":
        tensor = 0.1 * torch.randn(shape, generator=generator)
    elif len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        tensor = torch.randn(shape, generator=generator) * math.sqrt(1 / fan_in)
        if _SCALED_KEY.match(key):
            tensor = tensor * _SCALED_KEY_FACTOR
    elif name == "weight":
        tensor = 1 + 0.1 * torch.randn(shape, generator=generator)
    else:
        tensor = 0.1 * torch.randn(shape, generator=generator)
    return tensor.to(getattr(torch, dtype))


def deterministic_state_dict(spec: Iterable[Sequence]) -> OrderedDict[str, torch.Tensor]:
    """Rebuild a state dict from `[key, shape, dtype]` entries, in the spec's order."""
    return OrderedDict((key, deterministic_tensor(key, shape, dtype)) for key, shape, dtype in spec)


def save_vggish(folder: Path) -> list[str]:
    """Save a seeded VGGish to `folder` and return the converter arguments that attach it, as users
    converting for log-mel input do."""
    torch.manual_seed(0)
    VGGishModel(VGGishConfig()).save_pretrained(folder)
    return ["--vggish-dir", str(folder)]


def assert_holds_vggish(model: torch.nn.Module, folder: Path) -> None:
    """`model.audio_encoder` holds exactly the weights of the VGGish saved in `folder`."""
    vggish = VGGishModel.from_pretrained(folder)
    for (name, ours), theirs in zip(model.audio_encoder.state_dict().items(), vggish.state_dict().values()):
        assert torch.equal(ours, theirs), name
