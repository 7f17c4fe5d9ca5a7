"""load_tensors / load_labels read downloaded files without ever running code from them."""
import collections
import io
import os
import pickle
import threading
import time
import warnings

import numpy as np
import pytest

from asif_nb import load_labels, load_tensors
from asif_nb.safeload import MAX_LABEL_DEPTH


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


class _Touch:
    """Unpickling this creates ``path``: the marker that code from the file ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class _StorageFromBytes:
    """Pickles as torch.storage._load_from_bytes(data): torch's own would torch.load(data, weights_only=False)."""

    def __init__(self, data):
        self.data = data

    def __reduce__(self):
        import torch.storage

        return (torch.storage._load_from_bytes, (self.data,))


def _write(path, value):
    path.write_bytes(pickle.dumps(value))
    return path


def _batched(labels, batch=10):
    """What the authors' embeddings_from_dl pickles: ``all_labels += list(labels)`` over DataLoader batches."""
    import torch

    out = []
    for start in range(0, len(labels), batch):
        out += list(torch.tensor(labels[start:start + batch], dtype=torch.int64))
    return out


def _load_with_hang_guard(path, seconds=10.0):
    """Run load_labels in a thread; a regression to exponential work fails the test instead of hanging it."""
    outcome = {}

    def target():
        start = time.perf_counter()
        try:
            outcome["value"] = load_labels(path)
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = err
        outcome["seconds"] = time.perf_counter() - start

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"load_labels({path.name}) still running after {seconds} s"
    return outcome


# ------------------------------------------------------------------------------------ load_labels: plain files

def test_load_labels_reads_plain_pickles_json_and_text(tmp_path):
    _write(tmp_path / "l.pkl", [3, 1, 2])
    (tmp_path / "l.json").write_text('{"names": ["cat", "dog"]}')
    (tmp_path / "l.txt").write_text("cat\ndog\n\n")
    assert load_labels(tmp_path / "l.pkl") == [3, 1, 2]
    assert load_labels(tmp_path / "l.json") == {"names": ["cat", "dog"]}
    assert load_labels(tmp_path / "l.txt") == ["cat", "dog"]
    with pytest.raises(ValueError, match="load_labels reads"):
        load_labels(tmp_path / "l.csv")


def test_load_labels_refuses_any_class_in_a_pickle(tmp_path):
    _write(tmp_path / "evil.pkl", _Evil())
    with pytest.raises(ValueError, match="refusing to load (posix|os|nt).system"):
        load_labels(tmp_path / "evil.pkl")
    _write(tmp_path / "arr.pkl", np.arange(3))
    with pytest.raises(ValueError, match="refusing to load numpy"):
        load_labels(tmp_path / "arr.pkl")


def test_a_label_pickle_that_would_write_a_file_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    _write(tmp_path / "labels.pkl", [1, _Touch(marker), 2])
    with pytest.raises(ValueError, match=r"refusing to load (io|builtins)\.open"):
        load_labels(tmp_path / "labels.pkl")
    assert not marker.exists()


# ------------------------------------------------------------------------------------ load_labels: the authors' format

def test_the_authors_list_of_0d_tensors_becomes_plain_ints(tmp_path):
    labels = [7, 0, 999, 3, 3, 512, 1, 42, 8, 100, 5, 6, 900, 2, 11, 250, 4, 19, 77, 31, 64, 128, 256]
    value = load_labels(_write(tmp_path / "labels.pkl", _batched(labels)))
    assert value == labels and all(type(v) is int for v in value)


@pytest.mark.parametrize("dtype", ["int32", "uint8", "int16"])
def test_other_integer_label_tensors_are_read(tmp_path, dtype):
    import torch
    tensors = list(torch.tensor([1, 2, 250], dtype=getattr(torch, dtype)))
    assert load_labels(_write(tmp_path / "labels.pkl", tensors)) == [1, 2, 250]


class _Label:
    """Pickles as the authors' 0-d label tensors do, from given storage bytes."""

    def __init__(self, data, offset):
        self.data, self.offset = data, offset

    def __reduce__(self):
        import torch._utils

        args = (_StorageFromBytes(self.data), self.offset, (), (), False, collections.OrderedDict())
        return (torch._utils._rebuild_tensor_v2, args)


def test_labels_saved_from_cuda_are_read_on_a_machine_without_one(tmp_path):
    import torch
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage is deprecated
        torch.save(torch.tensor([4, 5, 6]).storage(), buffer, _use_new_zipfile_serialization=False)
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"  # the storage's location in the pickle
    assert buffer.getvalue().count(cpu) == 1
    on_gpu = buffer.getvalue().replace(cpu, cuda)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):  # what a torch.load without map_location does here
            torch.load(io.BytesIO(on_gpu), weights_only=True)
    labels = [_Label(on_gpu, offset) for offset in (2, 0, 1)]
    assert load_labels(_write(tmp_path / "labels.pkl", labels)) == [6, 4, 5]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda torch: [torch.tensor([1, 2])], r"shape \(2,\): only 0-d"),
        (lambda torch: list(torch.tensor([0.5, 1.5])), "must hold integers, not torch.float32"),
        (lambda torch: list(torch.tensor([True, False])), "must hold integers, not torch.bool"),
        (lambda torch: [torch.nn.Parameter(torch.zeros(()))], "refusing to load torch._utils._rebuild_parameter"),
        (lambda torch: [torch.Size([2, 3])], "refusing to load torch.Size"),
    ],
)
def test_tensors_other_than_0d_integers_are_refused(tmp_path, make, message):
    import torch
    with pytest.raises(ValueError, match=message):
        load_labels(_write(tmp_path / "labels.pkl", make(torch)))


def test_storage_bytes_are_read_with_weights_only_never_torch_load_full(tmp_path):
    import torch
    marker = tmp_path / "marker"
    buffer = io.BytesIO()
    # The legacy format _load_from_bytes receives, but holding an object whose unpickling writes a file.
    torch.save(_Touch(marker), buffer, _use_new_zipfile_serialization=False)
    _write(tmp_path / "labels.pkl", [_StorageFromBytes(buffer.getvalue())])
    with pytest.raises(ValueError, match="Weights only load failed|Unsupported global"):
        load_labels(tmp_path / "labels.pkl")
    assert not marker.exists()


def test_storage_not_in_torchs_legacy_format_is_refused(tmp_path):
    import torch  # noqa: F401
    _write(tmp_path / "labels.pkl", [_StorageFromBytes(b"PK\x03\x04 not a legacy storage")])
    with pytest.raises(ValueError, match="not a label storage in torch's legacy format"):
        load_labels(tmp_path / "labels.pkl")


# ------------------------------------------------------------------------------------ load_labels: bounds

def test_a_shared_reference_bomb_is_refused_at_once(tmp_path):
    bomb = [0] * 50
    for _ in range(7):
        bomb = [bomb] * 50  # 50**8 items when walked naively, under 1 KB on disk
    path = _write(tmp_path / "bomb.pkl", bomb)
    assert path.stat().st_size < 1000
    outcome = _load_with_hang_guard(path)
    assert isinstance(outcome.get("error"), ValueError), outcome
    assert "pickle bomb" in str(outcome["error"])
    print(f"bomb refused in {outcome['seconds'] * 1000:.2f} ms")


def test_shared_references_that_stay_small_are_fine(tmp_path):
    row = [1, 2, 3]
    value = load_labels(_write(tmp_path / "shared.pkl", {"a": [row] * 4, "b": (row, row)}))
    assert value == {"a": [[1, 2, 3]] * 4, "b": ([1, 2, 3], [1, 2, 3])}


def test_a_list_that_contains_itself_is_refused(tmp_path):
    loop = [1]
    loop.append(loop)
    with pytest.raises(ValueError, match="contains itself"):
        load_labels(_write(tmp_path / "loop.pkl", loop))


def test_nesting_is_bounded(tmp_path):
    deep = 0
    for _ in range(MAX_LABEL_DEPTH):
        deep = [deep]
    assert load_labels(_write(tmp_path / "ok.pkl", deep)) == deep
    with pytest.raises(ValueError, match=f"deeper than {MAX_LABEL_DEPTH} levels"):
        load_labels(_write(tmp_path / "deep.pkl", [deep]))


# ------------------------------------------------------------------------------------ load_tensors

def test_load_tensors_never_unpickles(tmp_path):
    np.save(tmp_path / "ok.npy", np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(load_tensors(tmp_path / "ok.npy"), np.arange(4))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_tensors(tmp_path / "obj.npy")
    import torch
    torch.save({"z": torch.ones(2, 3)}, tmp_path / "ok.pt")
    assert load_tensors(tmp_path / "ok.pt")["z"].shape == (2, 3)
    torch.save({"evil": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_tensors(tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="load_tensors reads"):
        load_tensors(tmp_path / "x.csv")


def test_a_pt_file_holding_a_numpy_array_loads_but_nothing_else_from_numpy(tmp_path):
    import torch
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    torch.save(array, tmp_path / "array.pt")
    loaded = load_tensors(tmp_path / "array.pt")
    assert isinstance(loaded, np.ndarray) and loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, array)
    marker = tmp_path / "marker"
    torch.save(np.array([_Touch(marker)], dtype=object), tmp_path / "objects.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_tensors(tmp_path / "objects.pt")
    assert not marker.exists()
    torch.save(np.float32(1.5), tmp_path / "scalar.pt")  # numpy.core.multiarray.scalar is not an array global
    with pytest.raises(pickle.UnpicklingError, match="scalar"):
        load_tensors(tmp_path / "scalar.pt")


# --------------------------------------------------------------------------------------------- array pickles

def test_load_array_pickle_reads_numeric_arrays_and_refuses_everything_else(tmp_path):
    from asif_nb.safeload import load_array_pickle

    value = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2], "f": np.ones(2, np.float32)}
    loaded = load_array_pickle(_write(tmp_path / "ok.pkl", value))
    assert (loaded[b"data"] == value[b"data"]).all() and loaded["labels"] == [1, 2] and loaded["f"].dtype == np.float32
    with pytest.raises(ValueError, match="holds a ndarray of dtype object"):
        load_array_pickle(_write(tmp_path / "objects.pkl", {"data": np.array([1, "x"], dtype=object)}))
    with pytest.raises(ValueError, match="refusing to load posix.system"):
        load_array_pickle(_write(tmp_path / "evil.pkl", {"data": _Evil()}))
    (tmp_path / "call.pkl").write_bytes(b"\x80\x02cnumpy\nndarray\n(J\x00\xe1\xf5\x05tR.")  # ndarray(100_000_000)
    with pytest.raises(ValueError, match="not a readable array pickle"):
        load_array_pickle(tmp_path / "call.pkl")
