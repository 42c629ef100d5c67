"""Run a script where Hub users are: `import avs_models` fails and the working tree is not on the path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Put before the script: makes every `avs_models` import fail and drops the working tree from sys.path.
_WITHOUT_THE_PACKAGE = r"""
import importlib.abc, sys
from pathlib import Path


class BlockPackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "avs_models":
            raise ModuleNotFoundError(f"No module named {name!r} (Hub users do not have it)")


sys.meta_path.insert(0, BlockPackage())
sys.path = [entry for entry in sys.path if not (Path(entry or ".") / "avs_models").exists()]
"""


def run_without_the_package(script: str, argument: str, folder: Path) -> str:
    """Run `script` (its `sys.argv[1]` is `argument`) in a fresh Python in `folder`, with a remote-code
    cache of its own and no PYTHONPATH; returns its standard output, fails the test if it fails."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(folder / "modules")
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_THE_PACKAGE + script, argument],
        capture_output=True,
        text=True,
        cwd=folder,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
