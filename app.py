"""The avs-models web demo as a Hugging Face Space (`sdk: gradio`, `app_file: app.py`).

The same page as `avs-models app` (see docs/web-demo.md). A Space serves it on the address and
port it sets in the environment (GRADIO_SERVER_NAME, GRADIO_SERVER_PORT); run locally with
`python app.py`, it listens on 127.0.0.1:7860. The model menu holds the folders listed in
AVS_APP_MODEL_DIRS (separated by the path separator, ":" on Linux), and the demo PCMANet, trained
on first use (a few minutes on a CPU) and cached in $AVS_MODELS_CACHE (default ~/.cache/avs-models).
"""

import os
import sys
from pathlib import Path

try:
    import avs_models  # noqa: F401
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from avs_models.app import launch

if __name__ == "__main__":
    model_dirs = [folder for folder in os.environ.get("AVS_APP_MODEL_DIRS", "").split(os.pathsep) if folder]
    launch(model_dirs, host=None, port=None)
