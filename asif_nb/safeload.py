"""Safe readers for downloaded arrays and label files: nothing downloaded is ever unpickled with plain pickle.

``load_tensors(path)`` reads ``.pt`` files with ``torch.load(weights_only=True)`` (plus, for a ``.pt`` that
holds numpy arrays, only numpy's array-reconstruction globals), ``.npy``/``.npz`` without pickles,
``.safetensors`` with safetensors.

``load_labels(path)`` reads JSON, text (one label a line) or a pickle. Pickles go through ``_LabelUnpickler``:
plain containers pass; the only globals it resolves are the three a ``pickle.dump`` of a list of 0-d torch
tensors needs (the ASIF authors' ``labels.pkl``), each replaced by a checked stand-in, and every tensor becomes
a plain Python int. Anything else is refused by name. The result is then walked once (each container visited
once, memoised by id) with bounds on the total number of items it expands to and on its nesting depth, so a
few hundred bytes of shared references (a "billion laughs" pickle) is refused at once instead of being
walked for minutes.

``load_array_pickle(path)`` reads a pickle of plain containers, bytes and numeric numpy arrays, such as the
CIFAR python batches (written by Python 2): ``_ArrayUnpickler`` resolves only numpy's array reconstruction
(``_reconstruct`` for an empty ``ndarray`` placeholder and ``dtype``), each as a checked stand-in; the result is
walked with the same bounds, and an array of objects is refused.
"""
from __future__ import annotations

import collections
import io
import json
import os
import pickle
import warnings
from pathlib import Path

# A label file expands to at most this many items (ImageNet-1k train has 1.28M labels) and nests at most this deep.
MAX_LABEL_ITEMS = 10_000_000
MAX_LABEL_DEPTH = 8
# torch.storage._load_from_bytes receives one storage in torch's legacy format, which starts with this pickle
# of torch's legacy magic number; a storage of labels (one DataLoader batch) is a few KB.
_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
_MAX_STORAGE_BYTES = 16 << 20

_PLAIN = (str, int, float, bool, type(None))
_CONTAINERS = (list, tuple, dict)
_ARRAY_KINDS = "biuf"  # the numpy dtype kinds an array pickle may hold: bool, signed/unsigned int, float


# --------------------------------------------------------------------------------------------- arrays

def load_tensors(path: str | os.PathLike):
    """Load downloaded arrays without unpickling arbitrary objects.

    ``.pt``/``.pth``/``.bin``: ``torch.load(map_location="cpu", weights_only=True)``; a file that holds numpy
    arrays instead of tensors is allowed numpy's array-reconstruction globals (``_reconstruct``, ``ndarray``,
    ``dtype`` and the numeric dtype classes) and nothing else. ``.npy``/``.npz``: numpy with
    ``allow_pickle=False``. ``.safetensors``: safetensors. Returns what the file holds (a tensor, an array, a
    dict of them); a file that needs any other global raises ``pickle.UnpicklingError`` naming it.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth", ".bin"):
        import torch

        with torch.serialization.safe_globals(_numpy_array_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    if suffix in (".npy", ".npz"):
        import numpy as np

        return np.load(path, allow_pickle=False)
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(str(path))
    raise ValueError(f"path={str(path)!r}: load_tensors reads .pt, .pth, .bin, .npy, .npz or .safetensors files.")


def _numpy_array_globals() -> list:
    """What ``torch.save(numpy_array)`` references: the array reconstructor, ndarray, dtype, numeric dtype classes.

    Each is also listed under its numpy 1.x module name (``numpy.core``), so files saved with numpy 1 load too."""
    import numpy as np

    try:
        from numpy._core import multiarray  # numpy 2
        old = "numpy.core.multiarray._reconstruct"
    except ImportError:  # numpy 1
        from numpy.core import multiarray
        old = None
    allowed: list = [multiarray._reconstruct, np.ndarray, np.dtype]
    if old is not None:
        allowed.append((multiarray._reconstruct, old))
    numeric = ("Bool", "Float16", "Float32", "Float64", "Int8", "Int16", "Int32", "Int64",
               "UInt8", "UInt16", "UInt32", "UInt64")
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    allowed += [getattr(dtypes, f"{kind}DType") for kind in numeric if hasattr(dtypes, f"{kind}DType")]
    return allowed


# --------------------------------------------------------------------------------------------- labels

def load_labels(path: str | os.PathLike):
    """Read a downloaded label list safely: JSON, text (one label a line) or a pickle.

    A pickle may hold lists/tuples/dicts of str, int, float, bool or None, and 0-d integer torch tensors as
    ``pickle.dump(list(label_tensor))`` writes them (returned as plain ints). No other class or function in the
    file is ever resolved, so no code in it can run. The result may expand to at most ``MAX_LABEL_ITEMS``
    items and nest at most ``MAX_LABEL_DEPTH`` levels; anything else raises ``ValueError`` saying why.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        value = json.loads(path.read_text(encoding="utf-8"))
    elif suffix == ".txt":
        value = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif suffix in (".pkl", ".pickle"):
        with open(path, "rb") as handle:
            try:
                value = _LabelUnpickler(handle).load()
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
                    KeyError, RuntimeError, MemoryError) as err:
                raise ValueError(f"path={str(path)!r} is not a readable label pickle: {err}") from None
    else:
        raise ValueError(f"path={str(path)!r}: load_labels reads .json, .txt or .pkl files.")
    try:
        _check_plain(value)
    except ValueError as err:
        raise ValueError(f"path={str(path)!r}: {err}") from None
    return value


class _LabelUnpickler(pickle.Unpickler):
    """Resolves exactly three globals, each to a checked stand-in; refuses every other one by name."""

    def __init__(self, handle):
        super().__init__(handle)
        self._storages: dict[bytes, object] = {}  # one batch's storage is pickled once per label: load it once
        allowed = {
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_label,
            ("torch.storage", "_load_from_bytes"): self._storage_from_bytes,
            ("collections", "OrderedDict"): _empty_ordered_dict,
        }
        self._allowed = allowed

    def find_class(self, module, name):
        found = self._allowed.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a downloaded label file may hold only plain containers "
                "and 0-d integer torch tensors"
            )
        return found

    def _storage_from_bytes(self, *args):
        if len(args) != 1 or type(args[0]) is not bytes:
            raise pickle.UnpicklingError("torch.storage._load_from_bytes must get one bytes argument")
        data = args[0]
        if data not in self._storages:
            self._storages[data] = _LoadedStorage(_load_storage(data))
        return self._storages[data]


class _LoadedStorage:
    """A storage this module loaded with ``weights_only=True``; the only storage ``_rebuild_label`` accepts."""

    __slots__ = ("storage",)

    def __init__(self, storage):
        self.storage = storage

    def __setstate__(self, state):  # a BUILD opcode must not swap the storage
        raise pickle.UnpicklingError("refusing to set the state of a storage")


def _load_storage(data: bytes):
    """Our ``torch.storage._load_from_bytes``: torch's own calls ``torch.load(weights_only=False)``."""
    if len(data) > _MAX_STORAGE_BYTES or not data.startswith(_LEGACY_MAGIC):
        raise pickle.UnpicklingError(
            f"a tensor storage of {len(data)} bytes is not a label storage in torch's legacy format"
        )
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage is deprecated: we only read it
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        dtype = getattr(storage, "dtype", None)
    if not isinstance(storage, torch.TypedStorage) or dtype is None or dtype.is_floating_point or dtype.is_complex \
            or dtype == torch.bool:
        raise pickle.UnpicklingError(f"a label tensor must hold integers, not {dtype or type(storage).__name__}")
    return storage


def _is_int(value) -> bool:
    return type(value) is int


def _rebuild_label(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    """Our ``torch._utils._rebuild_tensor_v2``: checks every argument, returns the 0-d tensor's value as an int."""
    if not isinstance(storage, _LoadedStorage):
        raise pickle.UnpicklingError("a tensor's storage must come from torch.storage._load_from_bytes")
    if not _is_int(offset) or type(size) is not tuple or type(stride) is not tuple \
            or not all(map(_is_int, size + stride)) or type(requires_grad) is not bool \
            or type(hooks) is not collections.OrderedDict or hooks or metadata not in (None, {}):
        raise pickle.UnpicklingError("a tensor in the label file has malformed arguments")
    if size != () or stride != ():
        raise pickle.UnpicklingError(
            f"a label tensor has shape {size}: only 0-d tensors (one label each, as list(labels) makes) are allowed"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        n = len(storage.storage)
        if not 0 <= offset < n:
            raise pickle.UnpicklingError(f"a label tensor points at element {offset} of a storage of {n}")
        return int(storage.storage[offset])


def _empty_ordered_dict(*args, **kwargs):
    if args or kwargs:
        raise pickle.UnpicklingError("collections.OrderedDict may only be built empty in a label file")
    return collections.OrderedDict()


# --------------------------------------------------------------------------------------------- array pickles

def load_array_pickle(path: str | os.PathLike):
    """Read a pickle of plain containers, bytes and numeric numpy arrays without running code from it.

    Made for datasets distributed as pickles, such as CIFAR's python batches (``{b"data": uint8 array,
    b"fine_labels": [...]}``, written by Python 2: read with ``encoding="latin1"``, numpy's rule, so Python 2
    strings come back as ``str``). The only globals resolved are numpy's array reconstruction (``_reconstruct``
    under its numpy 1 and 2 module names, ``ndarray`` as its argument only, and ``dtype``); arrays must hold
    bool, int, uint or float values. Returns what the file holds; anything else raises ``ValueError`` saying why.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        try:
            value = _ArrayUnpickler(handle).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
                KeyError, RuntimeError, MemoryError, UnicodeDecodeError) as err:
            raise ValueError(f"path={str(path)!r} is not a readable array pickle: {err}") from None
    try:
        _check_plain(value, arrays=True)
    except ValueError as err:
        raise ValueError(f"path={str(path)!r}: {err}") from None
    return value


class _NdarrayToken:
    """Stands for ``numpy.ndarray`` in a pickle: accepted as ``_reconstruct``'s first argument, never called."""


def _reconstruct(subtype, shape, typecode):
    """Our ``numpy.core.multiarray._reconstruct``: the empty placeholder numpy's pickles fill in with BUILD."""
    import numpy as np

    if subtype is not _NdarrayToken or shape != (0,) or not isinstance(typecode, (str, bytes)):
        raise pickle.UnpicklingError("numpy's _reconstruct may only build the empty ndarray placeholder numpy writes")
    return np.ndarray((0,), dtype=np.uint8)


class _ArrayUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy 1 and Python 2 pickles
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2
        ("numpy", "ndarray"): _NdarrayToken,
        ("numpy", "dtype"): None,  # numpy.dtype itself, filled in lazily (numpy is imported only when needed)
    }

    def __init__(self, handle):
        super().__init__(handle, encoding="latin1")

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: an array pickle may hold only plain containers, bytes and "
                "numeric numpy arrays")
        found = self._ALLOWED[(module, name)]
        if found is None:
            import numpy as np

            found = np.dtype
        return found


def _check_plain(value, max_items: int = MAX_LABEL_ITEMS, max_depth: int = MAX_LABEL_DEPTH,
                 arrays: bool = False) -> int:
    """Check ``value`` holds only plain containers of plain scalars; return how many items it expands to.
    ``arrays=True`` also allows bytes and numpy arrays of bool/int/uint/float (each counts as one item).

    Each container is visited once (memoised by id), so shared references cost nothing to check; the count
    is the expanded one (what a consumer iterating the value would see), so a shared-reference bomb is
    refused as soon as it passes ``max_items``. Cycles are refused."""
    expanded: dict[int, int] = {}
    on_path: set[int] = set()
    what, expected = ("the file", "not an array pickle") if arrays else ("label file", "not a label list")

    def visit(item, depth: int) -> int:
        kind = type(item)
        if kind in _PLAIN:
            return 1
        if arrays and (kind is bytes or _is_numeric_array(item)):
            return 1
        if kind not in _CONTAINERS:
            allowed = "str/int/float/bool/None, bytes and numeric numpy arrays" if arrays else "str/int/float/bool/None"
            detail = f" of dtype {item.dtype}" if hasattr(item, "dtype") else ""
            raise ValueError(f"{what} holds a {kind.__name__}{detail}: only plain containers of {allowed} are allowed")
        key = id(item)
        if key in expanded:
            return expanded[key]
        if key in on_path:
            raise ValueError(f"{what} holds a container that contains itself: {expected}")
        if depth >= max_depth:
            raise ValueError(f"{what} nests deeper than {max_depth} levels: {expected}")
        on_path.add(key)
        total = 1
        children = (x for pair in item.items() for x in pair) if kind is dict else item
        for child in children:
            total += visit(child, depth + 1)
            if total > max_items:
                raise ValueError(
                    f"{what} expands to more than {max_items:,} items (shared references repeated many "
                    "times): refusing a pickle bomb"
                )
        on_path.discard(key)
        expanded[key] = total
        return total

    return visit(value, 0)


def _is_numeric_array(item) -> bool:
    import numpy as np

    return type(item) is np.ndarray and item.dtype.kind in _ARRAY_KINDS and item.dtype.fields is None
