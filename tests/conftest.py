import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """Official-output fixtures (`../shared/parity`, or `$AVS_PARITY_DIR`); skips when absent."""
    path = Path(os.environ.get("AVS_PARITY_DIR", REPO_ROOT.parent / "shared" / "parity"))
    if not path.is_dir():
        pytest.skip(f"parity fixtures not found at {path} (set AVS_PARITY_DIR to their folder)")
    return path
