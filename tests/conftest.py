"""Fixtures shared by several test files."""
from __future__ import annotations

import io

import numpy as np
import pytest

from fakehub import FakeHub, tar_shard


@pytest.fixture
def fake_hub(monkeypatch):
    """A local hub on 127.0.0.1 with ``HF_ENDPOINT`` pointing at it (see tests/fakehub.py)."""
    hub = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield hub
    hub.close()


@pytest.fixture
def make_shard():
    """``make_shard(samples) -> bytes``: a webdataset tar (see ``fakehub.tar_shard``)."""
    return tar_shard


@pytest.fixture
def make_jpeg():
    """``make_jpeg(seed, size=64) -> bytes``: a small photo-like JPEG whose pixels depend on the seed."""
    return jpeg_bytes


def jpeg_bytes(seed: int, size: int = 64) -> bytes:
    """A small JPEG whose pixels depend on ``seed`` (smooth colour fields, so it compresses like a photo)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    channels = [np.sin(2 * np.pi * (rng.random() * 3 * x + rng.random() * 3 * y) + rng.random() * 6) for _ in range(3)]
    pixels = ((np.stack(channels, axis=-1) + 1) * 127.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def temp_cache(tmp_path, monkeypatch):
    """``ASIF_CACHE`` pointed at an empty ``tmp_path/cache`` for the test; returns that path."""
    monkeypatch.setenv("ASIF_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def write_images():
    """``write_images(folder, names)``: an 8 x 8 red image per name (format from the suffix) in ``folder``."""
    return red_images


def red_images(folder, names) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (8, 8), "red").save(folder / name)


# ------------------------------------------------------------------------------------------ the demo in miniature

@pytest.fixture
def make_deb():
    """``make_deb(path, files, version="1.0-1", links=None)``: a real .deb (ar of debian-binary, control.tar.xz,
    data.tar.xz) holding ``files`` ({path inside: bytes}) and symlinks ``links`` ({path: target})."""
    return deb_file


@pytest.fixture
def make_npm():
    """``make_npm(path, files, version="16.0.0")``: an npm tarball (``package/...``) with its package.json."""
    return npm_file


@pytest.fixture
def svg_bytes():
    """``svg_bytes(title, body=RECT)``: an OpenClipart-style SVG whose cc:Work dc:title is ``title``."""
    return svg


@pytest.fixture
def make_packages(tmp_path):
    """``make_packages(tuxpaint={}, openclipart={}, emoji={})`` → {manifest id: package file}: the demo's three
    packages in miniature, each argument adding files to (or replacing files of) its package."""
    def make(tuxpaint=None, openclipart=None, emoji=None) -> dict:
        folder = tmp_path / "packages"
        folder.mkdir(exist_ok=True)
        return {
            "tuxpaint-stamps-default": deb_file(folder / "tux.deb", {**tuxpaint_files(), **(tuxpaint or {})},
                                                "2022.06.04-1"),
            "openclipart-svg": deb_file(folder / "oc.deb", {**openclipart_files(), **(openclipart or {})},
                                        "1:0.18+dfsg-19"),
            "emoji-datasource-google": npm_file(folder / "emoji.tgz", {**emoji_files(), **(emoji or {})}),
        }

    return make


@pytest.fixture
def mini_packages(make_packages):
    """The demo's three packages in miniature: {manifest id: package file}."""
    return make_packages()


STAMPS = "usr/share/tuxpaint/stamps/"
OPENCLIPART = "usr/share/openclipart/svg/"
RECT = b'<rect x="10" y="10" width="50" height="40" fill="blue"/>'


def png(color=(200, 30, 30, 255), size=(40, 30)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def svg(title: bytes, body: bytes = RECT, size: bytes = b'width="100" height="80"', prolog: bytes = b"") -> bytes:
    return (prolog + b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/" '
            b'xmlns:cc="http://web.resource.org/cc/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
            b'xmlns:xlink="http://www.w3.org/1999/xlink" ' + size + b'><metadata><rdf:RDF><cc:Work><dc:title>'
            + title + b'</dc:title><dc:creator><cc:Agent><dc:title>Some Author</dc:title></cc:Agent></dc:creator>'
            b'</cc:Work></rdf:RDF></metadata>' + body + b'</svg>')


def tar_bytes(files: dict[str, bytes], mode="w:xz", links: dict[str, str] | None = None) -> bytes:
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return buffer.getvalue()


def deb_file(path, files: dict[str, bytes], version="1.0-1", links: dict[str, str] | None = None):
    members = {"debian-binary": b"2.0\n",
               "control.tar.xz": tar_bytes({"./control": f"Package: x\nVersion: {version}\n".encode()}),
               "data.tar.xz": tar_bytes({"./" + name: content for name, content in files.items()},
                                        links={"./" + name: target for name, target in (links or {}).items()})}
    with open(path, "wb") as handle:
        handle.write(b"!<arch>\n")
        for name, content in members.items():
            handle.write(f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(content):<10}`\n".encode())
            handle.write(content + (b"\n" if len(content) % 2 else b""))
    return path


def npm_file(path, files: dict[str, bytes], version="16.0.0"):
    import json

    files = {"package/package.json": json.dumps({"name": "emoji-datasource-google", "version": version}).encode(),
             **{"package/" + name: content for name, content in files.items()}}
    path.write_bytes(tar_bytes(files, mode="w:gz"))
    return path


def tuxpaint_files(n_per_category=6) -> dict[str, bytes]:
    files = {}
    for category in ("animals", "food", "vehicles"):
        for i in range(n_per_category):
            stem = f"{STAMPS}{category}/sub/thing{i}"
            files[stem + ".png"] = png((i * 30 % 255, 80, 120, 255))
            files[stem + ".txt"] = f"A {category} thing number {i}.\nfr.utf8=Une chose.\n".encode()
    files[f"{STAMPS}animals/sub/thing0_mirror.png"] = png()  # no .txt: a variant, skipped
    files[f"{STAMPS}animals/sub/both.svg"] = svg(b"x")  # shipped as SVG and PNG: the PNG is kept
    files[f"{STAMPS}animals/sub/both.png"] = png((0, 200, 0, 255))
    files[f"{STAMPS}animals/sub/both.txt"] = b"A green frog.\n"
    files[f"{STAMPS}animals/sub/photo.png"] = png((10, 10, 10, 255))
    files[f"{STAMPS}animals/sub/photo.txt"] = b"A red apple.\n"  # same caption as a food stamp: one group
    files[f"{STAMPS}food/apple.png"] = png((250, 0, 0, 255))
    files[f"{STAMPS}food/apple.txt"] = b"A red apple.\n"
    files[f"{STAMPS}food/gift.txt"] = b"A gift.\n"  # caption without image: skipped
    files[f"{STAMPS}symbols/letters/a.png"] = png()
    files[f"{STAMPS}symbols/letters/a.txt"] = b"The letter A.\n"
    return files


def openclipart_files() -> dict[str, bytes]:
    titles = {"animals/cat_01": b"Black cat", "animals/star1": b"gramastar", "food/pear": b"Pear",
              "food/x": b"Clipart by Nicu Buculei - pear", "tools/hammer": b"hammer",
              "tools/zork": b"zorblax", "tools/empty": b""}
    files = {OPENCLIPART + name + ".svg": svg(title) for name, title in titles.items()}
    for i in range(5):
        files[f"{OPENCLIPART}people/card{i}.svg"] = svg(b"playing card")
    return files


def emoji_files() -> dict[str, bytes]:
    import json

    entries = [
        {"name": "GRINNING FACE", "unified": "1F600", "image": "1f600.png", "short_name": "grinning",
         "category": "Smileys & Emotion", "has_img_google": True},
        {"name": "", "unified": "1F44D", "image": "1f44d.png", "short_name": "thumbs_up", "category": "People & Body",
         "has_img_google": True, "skin_variations": {"1F3FB": {"unified": "1F44D-1F3FB", "image": "1f44d-1f3fb.png"}}},
        {"name": "EMOJI MODIFIER FITZPATRICK TYPE-1-2", "unified": "1F3FB", "image": "1f3fb.png",
         "short_name": "skin-tone-2", "category": "Component", "has_img_google": True},
        {"name": "Andorra Flag", "unified": "1F1E6-1F1E9", "image": "1f1e6-1f1e9.png", "short_name": "flag-ad",
         "category": "Flags", "has_img_google": True},
    ]
    files = {"emoji.json": json.dumps(entries).encode()}
    for image in ("1f600.png", "1f44d.png", "1f44d-1f3fb.png", "1f3fb.png", "1f1e6-1f1e9.png"):
        files["img/google/64/" + image] = png((255, 200, 0, 128), size=(64, 64))
    return files

class FakeEncoder:
    """A stand-in for an image or text encoder: ``encode`` looks each item up in ``table`` (by ``str(item)``);
    an item not in it gets a fixed vector from the sha256 of its text. ``calls`` records every batch."""

    def __init__(self, name: str, modality: str, table: dict, dim: int):
        self.name, self.modality, self.table, self.dim = name, modality, table, dim
        self.calls = []

    def encode(self, items, progress: bool = False, **_):
        import hashlib

        import numpy as np

        if isinstance(items, (str, bytes)):
            raise TypeError(f"{self.name}.encode expects a list of items; wrap a single item as [item].")
        items = list(items)
        self.calls.append(items)
        rows = []
        for item in items:
            if str(item) in self.table:
                rows.append(self.table[str(item)])
            else:
                seed = int.from_bytes(hashlib.sha256(str(item).encode()).digest()[:4], "little")
                rows.append(np.random.default_rng(seed).standard_normal(self.dim))
        return np.asarray(rows, dtype=np.float32).reshape(len(items), self.dim)


@pytest.fixture
def tiny_asif(tmp_path):
    """An ``Asif`` over 12 anchor pairs with fake encoders and real image files: pair ``p{i}`` has caption
    ``"caption {i}"`` and image ``anchor-{i}.png`` (a flat colour), and each encoder maps an anchor's own image or
    caption to that anchor's embedding, so an anchor image queried with its own caption shares that anchor."""
    import numpy as np
    from PIL import Image

    from asif_nb.bundle import AnchorSet
    from asif_nb.data import Collection, Pair
    from asif_nb.model import AsifModel
    from asif_nb.pipeline import Asif

    rng = np.random.default_rng(0)
    n = 12
    anchor_images = rng.standard_normal((n, 8)).astype(np.float32)
    anchor_texts = rng.standard_normal((n, 6)).astype(np.float32)
    pairs = []
    for i in range(n):
        path = tmp_path / f"anchor-{i}.png"
        Image.new("RGB", (8, 8), (20 * i, 255 - 20 * i, 100)).save(path)
        pairs.append(Pair(f"p{i}", f"caption {i}", path, "test", "CC0"))
    collection = Collection("tiny", pairs)
    image_encoder = FakeEncoder("fake-image", "image", {str(p.image): anchor_images[i] for i, p in enumerate(pairs)}, 8)
    text_encoder = FakeEncoder("fake-text", "text", {p.caption: anchor_texts[i] for i, p in enumerate(pairs)}, 6)
    model = AsifModel(anchor_images, anchor_texts, k=4, p=1, ids=collection.ids, device="cpu")
    anchors = AnchorSet(collection, anchor_images, anchor_texts)
    return Asif(model, image_encoder, text_encoder, anchors=anchors)

def assert_same_csr(a, b):
    """Two scipy CSR matrices equal bit for bit (structure and float32 values)."""
    assert a.shape == b.shape
    assert np.array_equal(a.indptr, b.indptr)
    assert np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.data.view(np.uint32), b.data.view(np.uint32))


def random_pairs(seed=0, n_pairs=300, d1=12, d2=8):
    """``(images (n_pairs, d1), texts (n_pairs, d2), rng)``: random float32 anchor pairs and the generator."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_pairs, d1)).astype(np.float32),
            rng.standard_normal((n_pairs, d2)).astype(np.float32), rng)


@pytest.fixture
def same_csr():
    """``same_csr(a, b)``: assert two sparse representations are equal bit for bit."""
    return assert_same_csr


@pytest.fixture
def pair_data():
    """``pair_data(seed=0, n_pairs=300, d1=12, d2=8) -> (images, texts, rng)``: random float32 anchor pairs."""
    return random_pairs


@pytest.fixture(scope="session")
def demo_embeddings():
    """``(anchors, heldout)``: the demo collection's anchor embeddings (``AnchorSet``) and the held-out Tux Paint
    evaluation set's (``EvalEmbeddings``), by the offline demo encoders on the CPU (cached after the first run)."""
    from asif_nb import load_collection, load_eval, load_image_encoder, load_text_encoder
    from asif_nb.pipeline import embed_anchors, embed_eval

    image_encoder = load_image_encoder("efficientnet-lite2", device="cpu")
    text_encoder = load_text_encoder("all-MiniLM-L6-v2", device="cpu")
    anchors = embed_anchors(load_collection("demo"), image_encoder, text_encoder, progress=False)
    heldout = embed_eval(load_eval("tuxpaint-heldout"), image_encoder, text_encoder, progress=False)
    return anchors, heldout


def clustered(rng, n, dim, centres, spread):
    """``n`` float32 rows around ``centres`` (random ones), Gaussian spread: embeddings with clusters, as real ones."""
    return (centres[rng.integers(0, len(centres), n)] + spread * rng.standard_normal((n, dim))).astype(np.float32)


@pytest.fixture
def clustered_pairs():
    """``clustered_pairs(n_pairs, d1=32, d2=16, n_clusters=8, spread=0.15, n_queries=64, seed=0)`` ->
    ``(images, texts, image_queries, text_queries)``: anchor pairs and queries drawn around the same cluster
    centres (float32)."""
    def make(n_pairs, d1=32, d2=16, n_clusters=8, spread=0.15, n_queries=64, seed=0):
        rng = np.random.default_rng(seed)
        c1, c2 = rng.standard_normal((n_clusters, d1)), rng.standard_normal((n_clusters, d2))
        return (clustered(rng, n_pairs, d1, c1, spread), clustered(rng, n_pairs, d2, c2, spread),
                clustered(rng, n_queries, d1, c1, spread), clustered(rng, n_queries, d2, c2, spread))

    return make
