"""The safe loader for plain pickles of numpy arrays (CIFAR's python batches, Detectron2 ``.pkl``
weights): an unpickler that builds only numpy arrays, numpy scalars and plain containers, so a
tampered file cannot run code. Torch checkpoints go through ``infra.checkpoint.safe_load``.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np

from infra.errors import InputError

try:  # numpy >= 2 moved the pickle helpers; files written by numpy 1 (and the official ones) name the old module
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # pragma: no cover - numpy 1
    from numpy.core.multiarray import _reconstruct, scalar

ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): scalar,
    ("numpy._core.multiarray", "scalar"): scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 pickles bytes at protocol 2
}


class ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays and plain data"
            ) from None


def load_array_pickle(path: str | Path, what: str, encoding: str = "ASCII") -> object:
    """The object pickled in ``path``; a missing, truncated or unsafe file is one InputError naming ``what``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        with open(path, "rb") as handle:
            return ArrayUnpickler(handle, encoding=encoding).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise InputError(
            f"{path} is not a readable {what} ({exc}); expected a pickle of numpy arrays and plain "
            "data, so nothing in it was run"
        ) from exc
