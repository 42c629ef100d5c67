"""Saved folders that load without the package, and weights that load safely.

Every config, model and feature extractor of avs-models is a Transformers class with one of the
mixins below. `save_pretrained` then writes, next to the JSON and the weights:

- a flat copy of the package modules the saved object needs: the transitive closure of their
  package-internal (relative) imports, every module at the top of the folder, its imports rewritten
  to same-folder ones (`from ..vggish.configuration_vggish import X` becomes
  `from .configuration_vggish import X`);
- an `auto_map` naming the Auto classes that load it (`AutoConfig`, `AutoModel`,
  `AutoModelFor<Task>` of Transformers, `AutoFeatureExtractor`).

So `AutoModel.from_pretrained(folder, trust_remote_code=True)` works where `avs_models` is not
installed, locally and from the Hub. The flat layout is what Transformers can follow: its
`custom_object_save` and `dynamic_module_utils` copy a module and the same-folder modules it
imports with single-dot relative imports, recursively, into the dynamic-modules cache, and
nothing else. Nested configs and models of the package's own types (PCMANet's VGGish, C3N's
audio classifier) resolve through the local lookup of `auto.py`, which is part of those copies.

`HubModelMixin.from_pretrained` also reads every safetensors file of the checkpoint before loading
it, and refuses a truncated file or a tensor holding NaN/inf values with a message naming the
file (and the tensor).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError, safe_open
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file

# The `from <module> import` head of an import statement (what the rewrite replaces).
_IMPORT_FROM = re.compile(r"from\s+[\w.]+\s+import")
# Floating dtypes whose values can be checked for NaN/inf.
_CHECKED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Keyword arguments of `from_pretrained` that say where the weights files are.
_LOCATION_KWARGS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")


def _module_file(module_name: str) -> Path:
    module = sys.modules.get(module_name)
    location = getattr(module, "__file__", None)
    if location is None:
        spec = importlib.util.find_spec(module_name)
        location = spec.origin if spec is not None else None
    if location is None or not location.endswith(".py"):
        raise ValueError(f"cannot share the code of {module_name!r}: it has no Python source file")
    return Path(location)


def _internal_imports(module_name: str, source: str) -> list[tuple[ast.ImportFrom, str]]:
    """The relative imports of a module, with the absolute name of the module each one imports.

    Package code imports itself with relative imports only, so these are exactly the imports of the
    package's own modules; absolute imports are third-party dependencies (torch, transformers, ...).
    """
    package = module_name.rpartition(".")[0]
    top_level = module_name.split(".")[0]
    imports = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == top_level for alias in node.names):
            raise ValueError(f"{module_name} imports its own package absolutely: use a relative import")
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 0:
            if node.module.split(".")[0] == top_level:
                raise ValueError(f"{module_name} imports its own package absolutely ({node.module}): use a relative import")
            continue
        if node.module is None:
            raise ValueError(
                f"{module_name} line {node.lineno}: `from {'.' * node.level} import ...` cannot be shared as "
                "Hub code; import names from their module (`from .module import name`)"
            )
        target = importlib.util.resolve_name("." * node.level + node.module, package)
        if _module_file(target).name == "__init__.py":
            raise ValueError(
                f"{module_name} line {node.lineno} imports from the package {target}: import from the module "
                "that defines the names, so the code can be shared as one flat folder"
            )
        imports.append((node, target))
    return imports


def _flat_name(module_name: str) -> str:
    return module_name.rpartition(".")[2]


def hub_code_modules(module_names: Iterable[str]) -> dict[str, str]:
    """The flat Hub copy of `module_names` and every package module they import, transitively.

    Returns `{file name: source}`: one `<module>.py` per module, its package-internal imports
    rewritten to same-folder relative imports. Raises `ValueError` where that is impossible (two
    modules of the same name, imports from a package's `__init__`, absolute self-imports).
    """
    pending = list(dict.fromkeys(module_names))
    seen = set(pending)
    files: dict[str, str] = {}
    owners: dict[str, str] = {}
    while pending:
        module_name = pending.pop()
        source = _module_file(module_name).read_text(encoding="utf-8")
        lines = source.splitlines(keepends=True)
        # Rewrite from the end, so earlier positions stay valid.
        imports = sorted(_internal_imports(module_name, source), key=lambda item: (item[0].lineno, item[0].col_offset))
        for node, target in reversed(imports):
            line = lines[node.lineno - 1]
            head = _IMPORT_FROM.match(line, node.col_offset)
            if head is None:
                raise ValueError(f"{module_name} line {node.lineno}: write `from ... import` on one line to share it")
            lines[node.lineno - 1] = f"{line[: head.start()]}from .{_flat_name(target)} import{line[head.end():]}"
            if target not in seen:
                seen.add(target)
                pending.append(target)
        file_name = f"{_flat_name(module_name)}.py"
        if owners.setdefault(file_name, module_name) != module_name:
            raise ValueError(f"{owners[file_name]} and {module_name} would both be shared as {file_name}")
        files[file_name] = "".join(lines)
    return files


def write_hub_code(folder: str | Path, classes: Iterable[type]) -> list[Path]:
    """Write the flat Hub copy of the modules defining `classes` (and their imports) into `folder`."""
    folder = Path(folder)
    written = []
    for file_name, source in sorted(hub_code_modules(cls.__module__ for cls in classes).items()):
        path = folder / file_name
        path.write_text(source, encoding="utf-8")
        written.append(path)
    return written


def _auto_map_entry(cls: type) -> str:
    return f"{_flat_name(cls.__module__)}.{cls.__name__}"


class HubCodeMixin:
    """`save_pretrained` also writes the object's code (flat) and an `auto_map` naming its Auto classes.

    Subclasses say which Auto classes load the object (`hub_auto_classes`) and which object holds
    the `auto_map` that Transformers reads (`_auto_map_holder`).
    """

    def hub_auto_classes(self) -> dict[str, type]:
        raise NotImplementedError

    def _auto_map_holder(self):
        return self

    def save_pretrained(self, save_directory, *args, push_to_hub: bool = False, **kwargs):
        if push_to_hub:
            # Transformers uploads the files its own save writes, before the code is written here;
            # `push_to_hub` saves (through this method) into a fresh folder and uploads all of it.
            hub_kwargs = {
                name: kwargs.pop(name)
                for name in ("commit_message", "commit_description", "private", "token", "revision", "create_pr")
                if name in kwargs
            }
            repo_id = kwargs.pop("repo_id", Path(save_directory).name)
            result = self.save_pretrained(save_directory, *args, **kwargs)
            self.push_to_hub(repo_id, **hub_kwargs)
            return result
        auto_classes = self.hub_auto_classes()
        holder = self._auto_map_holder()
        holder.auto_map = {
            **(getattr(holder, "auto_map", None) or {}),
            **{name: _auto_map_entry(cls) for name, cls in auto_classes.items()},
        }
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):  # distributed saves: the main process writes files
            write_hub_code(save_directory, auto_classes.values())
        return result


class HubConfigMixin(HubCodeMixin):
    """For the package's `PreTrainedConfig`s: `AutoConfig` loads the saved `config.json`."""

    def hub_auto_classes(self) -> dict[str, type]:
        return {"AutoConfig": type(self)}


class HubFeatureExtractorMixin(HubCodeMixin):
    """For the package's feature extractors: `AutoFeatureExtractor` loads `preprocessor_config.json`."""

    def hub_auto_classes(self) -> dict[str, type]:
        return {"AutoFeatureExtractor": type(self)}


def _task_auto_class_name(model_class: type) -> str | None:
    """`XForAudioClassification` -> `AutoModelForAudioClassification`, when Transformers has that Auto class."""
    task = model_class.__name__.partition("For")[2]
    name = f"AutoModelFor{task}"
    return name if task and hasattr(transformers, name) else None


def _checkpoint_files(pretrained_model_name_or_path, kwargs: dict) -> list[Path]:
    """The safetensors files `from_pretrained` will read (downloaded to the cache when on the Hub)."""
    location = {name: kwargs[name] for name in _LOCATION_KWARGS if name in kwargs}

    def resolve(file_name: str) -> str | None:
        return cached_file(
            pretrained_model_name_or_path,
            file_name,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **location,
        )

    path = Path(pretrained_model_name_or_path)
    if path.is_file():
        return [path] if path.suffix == ".safetensors" else []
    index = resolve(SAFE_WEIGHTS_INDEX_NAME)
    if index is not None:
        shards = sorted(set(json.loads(Path(index).read_text())["weight_map"].values()))
        return [Path(resolved) for resolved in map(resolve, shards) if resolved is not None]
    single = resolve(SAFE_WEIGHTS_NAME)
    return [Path(single)] if single is not None else []


def check_safetensors_file(path: str | Path) -> None:
    """Read every tensor of a safetensors file; refuse a damaged file or NaN/inf weights, naming the file.

    Raises:
        OSError: the file cannot be read (truncated, a corrupt header).
        ValueError: a floating-point tensor holds NaN or infinite values.
    """
    try:
        with safe_open(str(path), framework="pt") as weights:
            for name in weights.keys():  # noqa: SIM118 (safe_open is no mapping)
                tensor = weights.get_tensor(name)
                if tensor.dtype not in _CHECKED_DTYPES:
                    continue
                non_finite = int((~torch.isfinite(tensor)).sum())
                if non_finite:
                    raise ValueError(
                        f"the weights file {path} is corrupted: tensor {name!r} holds {non_finite} NaN or "
                        f"infinite values (of {tensor.numel()}); download or save the model again"
                    )
    except SafetensorError as error:
        raise OSError(
            f"cannot read the weights file {path} ({error}): it is truncated or corrupted; download or save "
            "the model again"
        ) from error


class HubModelMixin(HubCodeMixin):
    """For the package's `PreTrainedModel`s: the folder's `config.json` gets an `auto_map` with
    `AutoConfig`, `AutoModel` (the base model) and Transformers' `AutoModelFor<Task>` of the class,
    and `from_pretrained` checks the safetensors files before loading them."""

    def hub_auto_classes(self) -> dict[str, type]:
        # `AutoModel` builds the base model: a head's model under `base_model_prefix`, else the class itself.
        base_model = self.base_model if isinstance(self.base_model, HubModelMixin) else self
        auto_classes = {"AutoConfig": type(self.config), "AutoModel": type(base_model)}
        task_auto_class = _task_auto_class_name(type(self))
        if task_auto_class is not None:
            auto_classes[task_auto_class] = type(self)
        return auto_classes

    def _auto_map_holder(self):
        return self.config

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        if pretrained_model_name_or_path is not None and kwargs.get("state_dict") is None:
            for weights_file in _checkpoint_files(pretrained_model_name_or_path, kwargs):
                check_safetensors_file(weights_file)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)


__all__ = [
    "HubCodeMixin",
    "HubConfigMixin",
    "HubFeatureExtractorMixin",
    "HubModelMixin",
    "check_safetensors_file",
    "hub_code_modules",
    "write_hub_code",
]
