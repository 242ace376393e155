"""A name -> object registry whose entries are imported on first use.

Listing the names (``--help``, ``list``, argparse choices, "not registered" messages) then costs no
import of torch, timm or Detectron2: only looking an entry up imports its module.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any


class LazyRegistry(Mapping):
    """``{name: "package.module"}`` (the module itself) or ``{name: "package.module:Attr"}``."""

    def __init__(self, targets: dict[str, str]):
        self._targets = dict(targets)
        self._loaded: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            module, _, attr = self._targets[name].partition(":")  # KeyError for an unknown name
            found = importlib.import_module(module)
            self._loaded[name] = getattr(found, attr) if attr else found
        return self._loaded[name]

    def __contains__(self, name: object) -> bool:  # Mapping's would look the entry up (an import)
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    def modules(self) -> list[str]:
        """The modules the entries live in (a fork server imports them all once, ahead of its steps)."""
        return sorted({target.partition(":")[0] for target in self._targets.values()})

    def __repr__(self) -> str:
        return f"LazyRegistry({sorted(self._targets)})"
