import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """Official-output fixtures (`../shared/parity`, or `$AVS_PARITY_DIR`); skips when absent."""
    path = Path(os.environ.get("AVS_PARITY_DIR", REPO_ROOT.parent / "shared" / "parity"))
    if not path.is_dir():
        pytest.skip(f"parity fixtures not found at {path} (set AVS_PARITY_DIR to their folder)")
    return path


@pytest.fixture(autouse=True)
def fresh_compiler_caches(request):
    """A compiling test starts with Dynamo's caches empty. Otherwise a model compiled by an earlier
    test makes this compile a recompile, which Dynamo makes shape-dynamic; PyTorch 2.13's Inductor
    fails on dynamic image sizes for several models (pytorch/pytorch#188422, docs/using-models.md)."""
    if request.node.get_closest_marker("torch_compile_test"):
        torch._dynamo.reset()
