"""Bundles across machines: ``load_bundle`` from a folder, an https URL, the HF hub or the manifest, and
``push_bundle`` to the HF hub.

Whoever embedded 1.6M pairs once (hours on a GPU) pushes the bundle to a hub dataset repo; a whole class then
loads it in minutes. Downloads go through the suite's verified downloader (``asif_nb.download.fetch``: byte caps
at the sizes ``bundle.json`` records, deadlines, resume, atomic writes) and every shard is checked against its
sha256 before use. A hub bundle is pinned to the commit the hub names when it is first opened.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from .bundle import MANIFEST, AnchorSet, BundleError, open_bundle, read_manifest
from .settings import cache_dir
from .transfer import Limits

_HUB_ID = re.compile(r"^(?:hf://datasets/)?([A-Za-z0-9][\w.-]*/[\w.-]+)(?:@([\w./-]+))?$")
MAX_MANIFEST_BYTES = 256 * 2**20


def load_bundle(path_or_id, n_pairs: int | None = None, *, verify: bool = True, limits=None) -> AnchorSet:
    """Open an anchor bundle and return an ``AnchorSet`` (memory-mapped anchors, the pairs' keys and captions).

    ``path_or_id`` is a bundle folder; an ``https://`` URL of one (the folder that holds ``bundle.json``); an HF
    hub dataset repo (``owner/name``, ``owner/name@revision`` or ``hf://datasets/owner/name``); or the id of a
    ``kind: "bundle"`` entry of ``data_manifest.json``. ``n_pairs`` takes the first pairs only. Remote bundles
    are downloaded into ``cache_dir()/bundles/remote/`` once. Every shard's sha256 is verified (``verify``).
    """
    if isinstance(path_or_id, os.PathLike) or (isinstance(path_or_id, str) and Path(path_or_id).expanduser().is_dir()):
        return open_bundle(path_or_id, n_pairs, verify)
    if not isinstance(path_or_id, str) or not path_or_id:
        raise ValueError(f"path_or_id={path_or_id!r}: pass a bundle folder, an https URL, a hub repo id or a "
                         "manifest id.")
    text = path_or_id.strip()
    if text.startswith(("http://", "https://")):
        return open_bundle(_download(text.rstrip("/") + "/", text, limits), n_pairs, verify)
    entry = _manifest_bundle(text)
    if entry is not None:
        return open_bundle(_download_entry(entry, limits), n_pairs, verify)
    match = _HUB_ID.match(text)
    if match and not text.startswith(("/", ".", "~")):
        return open_bundle(_download_hub(match.group(1), match.group(2), limits), n_pairs, verify)
    raise ValueError(f"{text!r} is neither a bundle folder, an https URL, a hub dataset repo (owner/name) nor a "
                     "bundle in data_manifest.json.")


def _manifest_bundle(artifact_id: str) -> dict | None:
    """The ``kind: "bundle"`` entry of ``data_manifest.json`` with this id, or None."""
    from .download import load_manifest

    entry = load_manifest().get(artifact_id)
    return entry if entry is not None and entry.get("kind") == "bundle" else None


def _download_entry(entry: dict, limits) -> Path:
    """A manifest bundle: its ``bundle.json`` must match the manifest's sha256, which pins every shard."""
    source = entry["sources"][0]
    expected = entry["files"][0]["sha256"]
    if source["type"] == "hf":
        return _download_hub(source["repo"], source.get("revision"), limits, expected)
    return _download(source["url"].rstrip("/") + "/", f"{entry['id']}:{source['url']}", limits, expected)


def _download_hub(repo: str, revision: str | None, limits, expected_sha: str | None = None) -> Path:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    endpoint = os.environ.get("HF_ENDPOINT") or None
    first = hf_hub_url(repo, MANIFEST, repo_type="dataset", revision=revision or "main", endpoint=endpoint)
    try:
        commit = get_hf_file_metadata(first).commit_hash
    except Exception as err:  # httpx / hub errors of many kinds: all mean "cannot be opened from here"
        raise BundleError(f"could not open the hub bundle {repo} ({first}): {type(err).__name__}: {err}. Check the "
                          "repo id and the connection (HF_ENDPOINT selects a mirror).") from None
    pinned = hf_hub_url(repo, MANIFEST, repo_type="dataset", revision=commit, endpoint=endpoint)
    return _download(pinned[: -len(MANIFEST)], f"hf://datasets/{repo}@{commit}", limits, expected_sha)


def _download(base_url: str, label: str, limits, expected_sha: str | None = None) -> Path:
    """Fetch ``bundle.json`` (checked against ``expected_sha`` when given) and every shard it lists from
    ``base_url`` into the cache; return the folder."""
    from .download import fetch

    folder = cache_dir() / "bundles" / "remote" / (
        re.sub(r"[^A-Za-z0-9_.-]+", "-", label.split("://")[-1]).strip("-")[:60] + "-"
        + hashlib.sha256(label.encode()).hexdigest()[:12])
    source = {"type": "https", "url": base_url + "{name}"}

    def entry(files):
        return {"bundle": {"id": "bundle", "description": f"anchor bundle {label}", "kind": "embeddings",
                           "count": None, "licence": "see bundle.json", "citation": label, "version": label,
                           "verify": "on-first-download", "files": files, "sources": [source]}}

    limits = limits or Limits()
    fetch("bundle", manifest=entry([{"name": MANIFEST, "sha256": expected_sha, "bytes": None,
                                     "max_bytes": MAX_MANIFEST_BYTES}]), dest=folder, progress=False, limits=limits)
    manifest = read_manifest(folder)
    files = [{"name": name, "sha256": shard["sha256"][half], "bytes": shard["bytes"][half]}
             for shard in manifest["shards"] for half, name in shard["files"].items()]
    fetch("bundle", manifest=entry(files), dest=folder, progress=True, limits=limits)
    return folder


def push_bundle(folder: str | os.PathLike, repo_id: str, *, private: bool = False, token: str | None = None,
                commit_message: str | None = None) -> str:
    """Upload a complete bundle to the HF hub dataset repo ``repo_id`` (created if needed); return the commit.

    Only the bundle's own files go up (``bundle.json``, the shards), after every shard's sha256 is checked. Log in
    first (``huggingface-cli login`` or ``token=``). Others then use ``load_bundle("owner/name")`` or
    ``asif_nb.load("paper", bundle="owner/name")``.
    """
    from huggingface_hub import HfApi

    anchors = open_bundle(folder, verify=True)  # refuses an incomplete or damaged bundle
    manifest = read_manifest(folder)
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private)
    info = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
        allow_patterns=[MANIFEST, "images-*.npy", "texts-*.npy", "pairs-*.jsonl"],
        commit_message=commit_message or (
            f"asif_nb anchor bundle: {manifest['collection']}, {len(anchors.collection)} pairs, "
            f"{manifest['encoders']['image']['name']} + {manifest['encoders']['text']['name']}"))
    return getattr(info, "oid", None) or str(info)


def bundle_summary(folder: str | os.PathLike) -> dict:
    """A few facts about a bundle folder: collection, rows, complete, encoders, dtype, MB on disk."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise BundleError(f"{folder} holds no {MANIFEST}.")
    size = sum((folder / name).stat().st_size for shard in manifest["shards"] for name in shard["files"].values()
               if (folder / name).exists())
    return {"collection": manifest["collection"], "rows": manifest["rows"], "complete": manifest["complete"],
            "skipped": manifest["skipped"], "image_encoder": manifest["encoders"]["image"]["name"],
            "text_encoder": manifest["encoders"]["text"]["name"], "dtype": manifest["dtype"],
            "MB": round(size / 1e6, 1), "shards": len(manifest["shards"]),
            "source": json.dumps(manifest["source"])[:200]}
