"""Transformers' own common test mixins, from the source distribution of the installed version.

The wheel of `transformers` carries no tests; its sdist on the package registry carries the
common mixins (`tests/test_modeling_common.py`, `test_configuration_common.py`, the feature
extraction and processing mixins). This module downloads that sdist once (pip, the package
registry only), unpacks its `tests/*.py` into a cache folder and imports them as the package
`transformers_tests`, so our test files write

    from transformers_common import ModelTesterMixin, ConfigTester

The sdist leaves out three helper modules that the mixins import; small stand-ins written here
take their place:

- `exporters/test_export.py` (`ExportTesterMixin`, the base class of `ModelTesterMixin`): an empty
  mixin. Its tests drive Transformers' exporters (ONNX, ExecuTorch, OpenVINO, ...) for generative
  models; our `torch.export` / ONNX checks live in our own test files.
- `generation/test_utils.py` (`GenerationTesterMixin`): an empty mixin. None of our models
  generates text; the common tests only ask whether a tester inherits it.
- `utils/test_configuration_utils.py` (`config_common_kwargs`): the common `PreTrainedConfig`
  keyword arguments, each set to a non-default value, written out below.
- the repository's `utils/fetch_hub_objects_for_ci.py` (`url_to_local_path`, which maps the
  processing mixin's media URLs to files pre-fetched by Transformers' CI): the identity. The
  processing tests that read those media need the network and are switched off where used.

Where the download is impossible the tests using it are skipped with the reason, unless
`AVS_REQUIRE_TRANSFORMERS_TESTS=1` (set by `.ci/run`), where it is an error.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

import pytest
import transformers

PACKAGE = "transformers_tests"
CACHE_DIR = Path(
    os.environ.get("AVS_TRANSFORMERS_TESTS_DIR", Path.home() / ".cache" / "avs-models" / "transformers-tests")
)

# `PreTrainedConfig` keyword arguments that every config accepts, each with a non-default value
# (read by `ConfigTester.check_config_arguments_init`).
CONFIG_COMMON_KWARGS = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "tie_word_embeddings": False,
    "chunk_size_feed_forward": 5,
    "architectures": ["BertModel"],
    "finetuning_task": "translation",
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}


def _tests_dir() -> Path:
    """The unpacked `tests/` folder of the installed version's sdist, downloading it on first use."""
    version = transformers.__version__
    target = CACHE_DIR / version / "tests"
    if (target / "__init__.py").is_file():
        return target
    with tempfile.TemporaryDirectory() as download_dir:
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
            f"transformers=={version}", "--dest", download_dir,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        archives = list(Path(download_dir).glob("transformers-*.tar.gz"))
        if result.returncode != 0 or not archives:
            message = f"cannot download the transformers=={version} sdist for its common tests: {result.stderr[-500:]}"
            if os.environ.get("AVS_REQUIRE_TRANSFORMERS_TESTS") == "1":
                raise RuntimeError(message)
            pytest.skip(message, allow_module_level=True)
        staging = target.parent / f"tests.partial-{os.getpid()}"
        staging.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                if len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py") and member.isfile():
                    (staging / parts[2]).write_bytes(archive.extractfile(member).read())
        # The repository's `tests/` is a package (its `__init__.py` is empty, and
        # `test_configuration_common` executes it); the sdist leaves the file out.
        (staging / "__init__.py").write_text("")
        if not target.is_dir():  # another process may have finished first
            staging.rename(target)
    return target


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    module.__path__ = []  # usable as a package for the next level
    sys.modules[name] = module
    return module


def _import_common_tests() -> None:
    if PACKAGE in sys.modules:
        return
    folder = _tests_dir()
    _module(f"{PACKAGE}.exporters")
    _module(f"{PACKAGE}.exporters.test_export", ExportTesterMixin=type("ExportTesterMixin", (), {}))
    _module(f"{PACKAGE}.generation")
    _module(f"{PACKAGE}.generation.test_utils", GenerationTesterMixin=type("GenerationTesterMixin", (), {}))
    _module(f"{PACKAGE}.utils")
    _module(f"{PACKAGE}.utils.test_configuration_utils", config_common_kwargs=CONFIG_COMMON_KWARGS)
    _module("fetch_hub_objects_for_ci", url_to_local_path=lambda url: url)
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(folder)]
    package.__file__ = str(folder / "__init__.py")
    sys.modules[PACKAGE] = package


_import_common_tests()
_modeling = importlib.import_module(f"{PACKAGE}.test_modeling_common")
_configuration = importlib.import_module(f"{PACKAGE}.test_configuration_common")
_feature_extraction = importlib.import_module(f"{PACKAGE}.test_feature_extraction_common")
_sequence_feature_extraction = importlib.import_module(f"{PACKAGE}.test_sequence_feature_extraction_common")
_processing = importlib.import_module(f"{PACKAGE}.test_processing_common")

ModelTesterMixin = _modeling.ModelTesterMixin
floats_tensor = _modeling.floats_tensor
ids_tensor = _modeling.ids_tensor
_config_zero_init = _modeling._config_zero_init
ConfigTester = _configuration.ConfigTester
FeatureExtractionSavingTestMixin = _feature_extraction.FeatureExtractionSavingTestMixin
SequenceFeatureExtractionTestMixin = _sequence_feature_extraction.SequenceFeatureExtractionTestMixin
ProcessorTesterMixin = _processing.ProcessorTesterMixin

__all__ = [
    "ConfigTester",
    "FeatureExtractionSavingTestMixin",
    "ModelTesterMixin",
    "ProcessorTesterMixin",
    "SequenceFeatureExtractionTestMixin",
    "_config_zero_init",
    "floats_tensor",
    "ids_tensor",
]
