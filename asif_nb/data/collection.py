"""``load_collection(name, n_pairs)``: the one entry point to every collection of anchors."""
from __future__ import annotations

from .demo import read_demo
from .folder import load_folder
from .records import COLLECTIONS, Collection, check_count


def load_collection(name: str = "demo", n_pairs: int | None = None) -> Collection:
    """The collection ``name`` (see ``list_collections()``), cut to its first ``n_pairs`` pairs.

    ``demo`` returns the anchors only (held-out Tux Paint pairs are never in it), building the collection on
    first use. ``folder:<path>`` reads your own pairs (``asif_nb.data.folder``). ``cc3m`` / ``cc12m`` are
    streamed into anchor bundles instead (see the ``asif_nb.data`` docstring).
    """
    n_pairs = check_count(n_pairs, "n_pairs", "the whole collection")
    if not isinstance(name, str):
        raise ValueError(f"name={name!r}: pass a collection name, one of {list(COLLECTIONS)}.")
    if name in ("cc3m", "cc12m"):
        raise ValueError(
            f"{name} is streamed, never stored as image files: embed it into an anchor bundle with "
            f"`python -m asif_nb.embed {name} --image-encoder NAME --text-encoder NAME --n-pairs N` (or "
            f"asif_nb.embed_collection / asif_nb.load('paper')), then asif_nb.load_bundle(folder).collection.")
    if name == "demo":
        pairs, meta = read_demo("anchor")
        collection = Collection("demo", pairs, meta["sources"], meta["split"])
    elif name.startswith("folder:"):
        collection = load_folder(name[len("folder:"):])
    else:
        raise ValueError(f"name={name!r} is not a collection: use one of {list(COLLECTIONS)}.")
    if n_pairs is not None:
        if n_pairs > len(collection):
            raise ValueError(f"n_pairs={n_pairs} but {name!r} holds {len(collection)} pairs: ask for at most that.")
        collection = collection[:n_pairs]
    return collection
