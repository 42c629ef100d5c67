"""Quiet the notices `torchao` prints when Transformers imports it on every `import avs_models`.

Transformers imports `torchao` whenever it is installed (the `int8` extra installs it). On a
CPU-only PyTorch, torchao then logs one "Failed to load .../_C_....so" warning per CUDA kernel
library it ships, and its registration of a few enums as pytree constants makes PyTorch log a
deprecation notice per enum. Neither concerns a user of this package, so these records, and only
these, are dropped; every other torchao or PyTorch message passes.
"""

from __future__ import annotations

import logging
import re

import torch

_CUDA_LIBRARY_NOTICE = re.compile(r"Failed to load \S*[/\\]torchao[/\\]_C\w*\.[\w.-]*so\b")


def _is_cpu_only_torch() -> bool:
    return torch.version.cuda is None and torch.version.hip is None


class _TorchaoLoadNotices(logging.Filter):
    """Drops torchao's failed loads of its CUDA kernel libraries, which a CPU-only PyTorch cannot use."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_is_cpu_only_torch() and _CUDA_LIBRARY_NOTICE.match(record.getMessage()))


class _TorchaoEnumConstantNotices(logging.Filter):
    """Drops PyTorch's deprecation notice for the enums torchao registers as pytree constants."""

    def filter(self, record: logging.LogRecord) -> bool:
        registered = record.args[0] if isinstance(record.args, tuple) and record.args else None
        return not (
            isinstance(registered, type)
            and registered.__module__.startswith("torchao")
            and "is an Enum subclass" in str(record.msg)
        )


def _install() -> None:
    for name, notice_filter in (
        ("torchao", _TorchaoLoadNotices),
        ("torch.utils._pytree", _TorchaoEnumConstantNotices),
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, notice_filter) for existing in logger.filters):
            logger.addFilter(notice_filter())


_install()  # on import, once: `avs_models/__init__.py` imports this module before Transformers
