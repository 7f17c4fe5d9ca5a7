"""asif_nb.data: the demo collection (on miniature packages and, marked slow, on the real ones), folder
collections and their validation, webdataset streaming, and every evaluation-set loader."""
from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from asif_nb import data
from asif_nb.data import Collection, clean_title, filter_titles, heldout_split, keep_title, load_collection, load_eval


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ASIF_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def png_bytes(color=(200, 30, 30, 255), size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/" '
       b'xmlns:cc="http://web.resource.org/cc/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
       b'width="100" height="80"><metadata><rdf:RDF><cc:Work><dc:title>%s</dc:title><dc:creator><cc:Agent>'
       b'<dc:title>Some Author</dc:title></cc:Agent></dc:creator></cc:Work></rdf:RDF></metadata>'
       b'<rect x="10" y="10" width="50" height="40" fill="blue"/></svg>')


def tar_bytes(files: dict[str, bytes], mode="w:xz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def make_deb(path, files: dict[str, bytes], version="1.0-1"):
    """A real .deb: an ar archive of debian-binary, control.tar.xz and data.tar.xz."""
    members = {"debian-binary": b"2.0\n",
               "control.tar.xz": tar_bytes({"./control": f"Package: x\nVersion: {version}\n".encode()}),
               "data.tar.xz": tar_bytes({"./" + name: content for name, content in files.items()})}
    with open(path, "wb") as handle:
        handle.write(b"!<arch>\n")
        for name, content in members.items():
            handle.write(f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(content):<10}`\n".encode())
            handle.write(content + (b"\n" if len(content) % 2 else b""))
    return path


def make_npm(path, files: dict[str, bytes], version="16.0.0"):
    files = {"package/package.json": json.dumps({"name": "emoji-datasource-google", "version": version}).encode(),
             **{"package/" + name: content for name, content in files.items()}}
    path.write_bytes(tar_bytes(files, mode="w:gz"))
    return path


STAMPS = "usr/share/tuxpaint/stamps/"


def tuxpaint_files(n_per_category=6) -> dict[str, bytes]:
    files = {}
    for category in ("animals", "food", "vehicles"):
        for i in range(n_per_category):
            stem = f"{STAMPS}{category}/sub/thing{i}"
            files[stem + ".png"] = png_bytes((i * 30 % 255, 80, 120, 255))
            files[stem + ".txt"] = f"A {category} thing number {i}.\nfr.utf8=Une chose.\n".encode()
    files[f"{STAMPS}animals/sub/thing0_mirror.png"] = png_bytes()  # no .txt: a variant, skipped
    files[f"{STAMPS}animals/sub/both.svg"] = SVG % b"x"  # shipped as SVG and PNG: the PNG is kept
    files[f"{STAMPS}animals/sub/both.png"] = png_bytes((0, 200, 0, 255))
    files[f"{STAMPS}animals/sub/both.txt"] = b"A green frog.\n"
    files[f"{STAMPS}animals/sub/photo.png"] = png_bytes((10, 10, 10, 255))
    files[f"{STAMPS}animals/sub/photo.txt"] = b"A red apple.\n"  # same caption as a food stamp: one group
    files[f"{STAMPS}food/apple.png"] = png_bytes((250, 0, 0, 255))
    files[f"{STAMPS}food/apple.txt"] = b"A red apple.\n"
    files[f"{STAMPS}food/gift.txt"] = b"A gift.\n"  # caption without image: skipped
    files[f"{STAMPS}symbols/letters/a.png"] = png_bytes()
    files[f"{STAMPS}symbols/letters/a.txt"] = b"The letter A.\n"
    return files


def openclipart_files() -> dict[str, bytes]:
    base = "usr/share/openclipart/svg/"
    titles = {"animals/cat_01": b"Black cat", "animals/star1": b"gramastar", "food/pear": b"Pear",
              "food/x": b"Clipart by Nicu Buculei - pear", "tools/hammer": b"hammer",
              "tools/zork": b"zorblax", "tools/empty": b""}
    files = {base + name + ".svg": SVG % title for name, title in titles.items()}
    for i in range(5):
        files[f"{base}people/card{i}.svg"] = SVG % b"playing card"
    return files


def emoji_files() -> dict[str, bytes]:
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
        files["img/google/64/" + image] = png_bytes((255, 200, 0, 128), size=(64, 64))
    return files


@pytest.fixture
def mini_packages(tmp_path):
    folder = tmp_path / "packages"
    folder.mkdir()
    return {
        "tuxpaint-stamps-default": make_deb(folder / "tux.deb", tuxpaint_files(), "2022.06.04-1"),
        "openclipart-svg": make_deb(folder / "oc.deb", openclipart_files(), "1:0.18+dfsg-19"),
        "emoji-datasource-google": make_npm(folder / "emoji.tgz", emoji_files()),
    }


# ------------------------------------------------------------------------------------------ title filter

def test_keep_title_drops_the_listed_noise_and_keeps_real_titles():
    noise = ["gramastar", "Part of the Flat Icon Collection (Wed Aug 25 23:29:46 2004)", "Clipart by Nicu Buculei - pear",
             "Lemon SVG theme", "Etiquette Icons", "Openclipart", "", "   ", None, "zorblax", "pantyhose10",
             "SVG Gradient Collection by Alan Horkan, 2004.", "AIGA_Symbol_Signs"]
    for title in noise:
        assert keep_title(title) is None, title
    assert keep_title("hammer") == "hammer"
    assert keep_title("Scissors") == "scissors"
    assert keep_title("RoundPointShovel") == "round point shovel"
    assert keep_title("Aircraft3") == "aircraft"
    assert keep_title("Big truck") == "big truck"


def test_clean_title_normalises_text():
    assert clean_title("croissant (b &amp; w)") == "croissant black and white"
    assert clean_title("arrow-up-green") == "arrow up green"
    assert clean_title("jigsaw_red_10") == "jigsaw red"
    assert clean_title("9_mm_gun") == "9 mm gun"


def test_filter_titles_keeps_at_most_three_of_a_title_in_order():
    items = [(f"id{i}", "Playing card") for i in range(5)] + [("x", "gramastar"), ("y", "Pear")]
    assert filter_titles(items) == [("id0", "playing card"), ("id1", "playing card"), ("id2", "playing card"),
                                    ("y", "pear")]
    assert len(filter_titles(items, max_repeats=1)) == 2


# ------------------------------------------------------------------------------------------ held-out split

def synthetic_stamps():
    stamps = []
    for category, n in (("animals", 20), ("food", 10), ("tiny", 2), ("three", 3)):
        for i in range(n):
            stamps.append({"id": f"tuxpaint/{category}/{i:02d}", "caption": f"{category} {i}", "category": category})
    stamps.append({"id": "tuxpaint/animals/zz-dup", "caption": "ANIMALS 3", "category": "animals"})
    return stamps


def test_heldout_split_is_stable_grouped_and_covers_every_category():
    stamps = synthetic_stamps()
    anchors, heldout, unused = heldout_split(stamps)
    again = heldout_split(list(reversed(stamps)))
    assert (anchors, heldout, unused) == again
    ids = {s["id"] for s in stamps}
    assert anchors | set(heldout) | unused == ids and not anchors & set(heldout) and not anchors & unused
    category = {s["id"]: s["category"] for s in stamps}
    per_category = {c: sum(category[i] == c for i in heldout) for c in ("animals", "food", "tiny", "three")}
    assert per_category == {"animals": 4, "food": 2, "tiny": 1, "three": 2}  # max(2, 20 %), never all of one
    caption = {s["id"]: s["caption"].lower() for s in stamps}
    assert not {caption[i] for i in anchors} & {caption[i] for i in heldout}  # a caption never on both sides
    assert ("tuxpaint/animals/03" in heldout) == ("tuxpaint/animals/zz-dup" in unused)


# ------------------------------------------------------------------------------------------ packages

def test_unpack_package_reads_debs_and_npm_tarballs_without_dpkg(tmp_path):
    deb = make_deb(tmp_path / "p.deb", {"usr/share/x/a.txt": b"hello", "usr/share/x/a.ogg": b"sound"}, "2.5-1")
    folder = data.unpack_package(deb, "tuxpaint-stamps-default", dest=tmp_path / "out")
    assert (folder / "usr/share/x/a.txt").read_bytes() == b"hello"
    assert not (folder / "usr/share/x/a.ogg").exists()  # the filter leaves sounds packed
    assert json.loads((folder / ".unpacked.json").read_text())["version"] == "2.5-1"
    (folder / "usr/share/x/a.txt").write_text("kept")  # a second call reuses the unpacked folder
    assert data.unpack_package(deb, "tuxpaint-stamps-default", dest=tmp_path / "out") == folder
    assert (folder / "usr/share/x/a.txt").read_text() == "kept"
    npm = make_npm(tmp_path / "e.tgz", {"emoji.json": b"[]"}, "16.0.0")
    assert data._source_version(data.unpack_package(npm, "emoji-datasource-google", dest=tmp_path / "e")) == "16.0.0"


def test_unpack_refuses_paths_outside_the_destination(tmp_path):
    deb = make_deb(tmp_path / "evil.deb", {"../../escape.txt": b"x"})
    with pytest.raises(ValueError, match="outside"):
        data.unpack_package(deb, "other", dest=tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape.txt").exists()
    with pytest.raises(ValueError, match="not a .deb"):
        data.unpack_package((tmp_path / "bad.deb").write_bytes(b"junk") and tmp_path / "bad.deb", "x",
                            dest=tmp_path / "out2")


# ------------------------------------------------------------------------------------------ the demo build

def test_source_readers_on_miniatures(tmp_path, mini_packages):
    tux = data.unpack_package(mini_packages["tuxpaint-stamps-default"], "tuxpaint-stamps-default", tmp_path / "t")
    stamps = {s["id"]: s for s in data.tuxpaint_stamps(tux)}
    assert "tuxpaint/animals/sub/thing0" in stamps and stamps["tuxpaint/animals/sub/thing0"]["caption"] == \
        "A animals thing number 0."
    assert stamps["tuxpaint/animals/sub/both"]["path"].suffix == ".png"
    assert not any("symbols" in i or "mirror" in i or "gift" in i for i in stamps)
    assert {s["category"] for s in stamps.values()} == {"animals", "food", "vehicles"}

    oc = data.unpack_package(mini_packages["openclipart-svg"], "openclipart-svg", tmp_path / "o")
    link = oc / "usr/share/openclipart/svg/food/link.svg"
    os.symlink(oc / "usr/share/openclipart/svg/food/pear.svg", link)  # packages hold symlinked duplicates
    captions = {i["id"]: i["caption"] for i in data.openclipart_items(oc)}
    assert captions == {"openclipart/animals/cat_01": "black cat", "openclipart/food/pear": "pear",
                        "openclipart/tools/hammer": "hammer", "openclipart/people/card0": "playing card",
                        "openclipart/people/card1": "playing card", "openclipart/people/card2": "playing card"}

    emoji = data.unpack_package(mini_packages["emoji-datasource-google"], "emoji-datasource-google", tmp_path / "e")
    assert {i["id"]: i["caption"] for i in data.emoji_items(emoji)} == {
        "emoji/1f600": "grinning face", "emoji/1f44d": "thumbs up", "emoji/1f1e6-1f1e9": "andorra flag"}


def test_build_demo_on_miniatures_is_stable_and_never_leaks_heldout_pairs(cache, mini_packages):
    folder = data.build_demo(packages=mini_packages, workers=1, progress=False)
    first = (folder / "pairs.jsonl").read_text()
    collection = load_collection("demo")
    assert isinstance(collection, Collection) and collection.name == "demo"
    assert {p.source for p in collection} == {"tuxpaint", "openclipart", "emoji"}
    assert collection.ids == sorted(collection.ids, key=lambda i: data._stable_hash("asif-demo-order:" + i))
    heldout = load_eval("tuxpaint-heldout")
    assert heldout.task == "retrieval" and len(heldout) >= 6  # at least 2 per category
    assert not set(heldout.ids) & set(collection.ids)
    assert not {c.lower() for c in heldout.captions} & {c.lower() for c in collection.captions}
    assert len(set(heldout.captions)) == len(heldout.captions)
    assert heldout.class_names == ["animals", "food", "vehicles"]
    assert [heldout.class_names[label] for label in heldout.labels] == [i.split("/")[1] for i in heldout.ids]

    image = collection[0].load_image()
    assert image.mode == "RGB" and max(image.size) <= data.IMAGE_SIZE
    emoji = next(p for p in collection if p.source == "emoji").load_image()
    assert emoji.getpixel((0, 0)) != (0, 0, 0)  # half-transparent yellow composited on white, not on black
    meta = json.loads((folder / "meta.json").read_text())
    versions = {s["source"]: s["version"] for s in meta["sources"]}
    assert versions == {"tuxpaint": "2022.06.04-1", "openclipart": "1:0.18+dfsg-19", "emoji": "16.0.0"}
    assert sum(s["count"] for s in meta["sources"]) == len(collection) == meta["anchors"]

    data.build_demo(packages=mini_packages, workers=1, progress=False, force=True)
    assert (folder / "pairs.jsonl").read_text() == first
    assert load_collection("demo", n_pairs=5).ids == collection.ids[:5]


def test_a_failed_build_leaves_no_collection_behind(cache, mini_packages, monkeypatch):
    def broken(folder):  # fails after every image is written, just before pairs.jsonl
        raise RuntimeError("disk full")

    monkeypatch.setattr(data, "_source_version", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        data.build_demo(packages=mini_packages, workers=1, progress=False)
    assert not data.demo_dir().exists()
    assert not [p for p in data.demo_dir().parent.iterdir() if p.name.startswith(".demo")]


# ------------------------------------------------------------------------------------------ collections API

def test_collection_slicing_and_n_pairs_validation(tmp_path):
    pairs = [data.Pair(f"id{i}", f"caption {i}", tmp_path / f"{i}.png", "s", "l") for i in range(5)]
    collection = Collection("c", pairs, [{"package": "p"}], {"rule": "r"})
    part = collection[1:3]
    assert isinstance(part, Collection) and part.ids == ["id1", "id2"] and part.sources == collection.sources
    assert collection[4].caption == "caption 4" and collection.captions[0] == "caption 0"
    for bad in (0, -1, 2.5, "10", True):
        with pytest.raises(ValueError, match="n_pairs"):
            load_collection("demo", n_pairs=bad)
    with pytest.raises(ValueError, match="not a collection"):
        load_collection("coco")
    assert set(data.list_collections()) == {"demo", "folder:<path>", "cc3m", "cc12m"}


# ------------------------------------------------------------------------------------------ folder:<path>

def write_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (8, 8), "red").save(folder / name)


def test_folder_collection_from_csv_jsonl_and_txt(tmp_path):
    csv_dir = tmp_path / "csv"
    write_images(csv_dir, ["b.png", "a.png"])
    (csv_dir / "captions.csv").write_text("image,caption,id\nb.png,a bee,bee\na.png,an ant,\n")
    collection = load_collection(f"folder:{csv_dir}")
    assert collection.ids == ["bee", "a.png"] and collection.captions == ["a bee", "an ant"]  # file order kept
    assert collection[0].load_image().size == (8, 8)

    jsonl_dir = tmp_path / "jsonl"
    write_images(jsonl_dir, ["x.png"])
    (jsonl_dir / "captions.jsonl").write_text(json.dumps({"image": "x.png", "caption": "an x"}) + "\n\n")
    assert load_collection(f"folder:{jsonl_dir}").captions == ["an x"]

    txt_dir = tmp_path / "txt"
    write_images(txt_dir, ["b.png", "a.jpg", "no_caption.png"])
    (txt_dir / "b.png").with_suffix(".txt").write_text("bee\nsecond line ignored")
    (txt_dir / "a.txt").write_text("ant")
    collection = load_collection(f"folder:{txt_dir}", n_pairs=2)
    assert collection.ids == ["a", "b"] and collection.captions == ["ant", "bee"]


@pytest.mark.parametrize("rows, message", [
    ("image,caption\nmissing.png,a thing\n", "missing"),
    ("image,caption\nbroken.png,a thing\n", "unreadable"),
    ("image,caption\nok.png,   \n", "empty"),
    ("image,caption,id\nok.png,one,same\nok2.png,two,same\n", "duplicate id"),
    ("picture,text\nok.png,one\n", "image,caption"),
    ("image,caption\n", "no captions found"),
])
def test_folder_validation_errors_name_the_problem(tmp_path, rows, message):
    write_images(tmp_path, ["ok.png", "ok2.png"])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "captions.csv").write_text(rows)
    with pytest.raises(ValueError, match=message) as error:
        load_collection(f"folder:{tmp_path}")
    assert "captions.csv" in str(error.value) or "no captions" in str(error.value)


def test_folder_errors_for_missing_folder_bad_jsonl_and_two_caption_files(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        load_collection(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "captions.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        load_collection(f"folder:{tmp_path}")
    (tmp_path / "captions.csv").write_text("image,caption\n")
    with pytest.raises(ValueError, match="both"):
        load_collection(f"folder:{tmp_path}")


# ------------------------------------------------------------------------------------------ streamed collections

def test_streamed_collections_are_never_written_as_image_files_and_say_how_to_embed_them(cache):
    for name in ("cc12m", "cc3m"):
        with pytest.raises(ValueError, match=f"python -m asif_nb.embed {name}"):
            load_collection(name, n_pairs=4)
    assert not (data.cache_dir() / "collections" / "cc12m").exists()

# ------------------------------------------------------------------------------------------ evaluation sets

def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reader_inverts_and_balances_subsets(tmp_path):
    labels = np.array([0, 0, 0, 1, 1, 2, 9, 9], dtype=np.uint8)
    pixels = np.zeros((8, 28, 28), dtype=np.uint8)
    pixels[:, 10, 10] = 255
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", pixels)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    evalset = load_eval("fashion-mnist", root=tmp_path)
    assert len(evalset) == 8 and evalset.images[0].size == (28, 28) and evalset.images[0].mode == "RGB"
    assert evalset.images[0].getpixel((0, 0)) == (255, 255, 255) and evalset.images[0].getpixel((10, 10)) == (0, 0, 0)
    assert load_eval("fashion-mnist", root=tmp_path, invert=False).images[0].getpixel((0, 0)) == (0, 0, 0)
    assert evalset.labels.dtype == np.int64 and evalset.class_names[9] == "Ankle boot"
    assert sorted(load_eval("fashion-mnist", root=tmp_path, n=4).labels.tolist()) == [0, 1, 2, 9]
    with pytest.raises(ValueError, match="n=9"):
        load_eval("fashion-mnist", root=tmp_path, n=9)


def test_imagenet_samples_from_foolbox():
    evalset = load_eval("imagenet-samples")
    assert len(evalset) == 20 and len(evalset.class_names) == 1000 and evalset.class_names[0] == "tench"
    assert evalset.labels.tolist()[:3] == [243, 559, 438]  # the labels in foolbox's file names
    all_templates = data._clip_benchmark_json("en_zeroshot_classification_templates.json")["imagenet1k"]
    assert len(evalset.templates) == 7 and set(evalset.templates) <= set(all_templates)
    assert Image.open(evalset.images[0]).size[0] > 100


def test_imagenet_folder_and_the_authors_seeded_halves(tmp_path):
    import torch

    wnids = data._imagenet_wnids()
    assert len(wnids) == 1000 and wnids[0] == "n01440764"
    for wnid in (wnids[0], wnids[999]):
        write_images(tmp_path / "val" / wnid, [f"ILSVRC2012_val_{wnid}_{i}.JPEG" for i in range(5)])
    val, test = load_eval("imagenet", split="val", root=tmp_path), load_eval("imagenet", split="test", root=tmp_path)
    every = load_eval("imagenet", split="all", root=tmp_path)
    assert len(val) == len(test) == 5 and len(every) == 10 and not set(val.ids) & set(test.ids)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(42)).tolist()
    assert val.ids == [every.ids[i] for i in perm[:5]]
    assert set(every.labels.tolist()) == {0, 999}
    with pytest.raises(ValueError, match="split="):
        load_eval("imagenet", split="train", root=tmp_path)


def test_imagenet_without_a_folder_says_what_to_do(monkeypatch):
    monkeypatch.delenv("IMAGENET_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="IMAGENET_DIR"):
        load_eval("imagenet")


def test_imagenet_v2_folder_format(tmp_path):
    for label in ("0", "7"):
        write_images(tmp_path / label, ["a.jpeg", "b.jpeg"])
    evalset = load_eval("imagenet-v2", root=tmp_path)
    assert evalset.labels.tolist() == [0, 0, 7, 7] and len(evalset.class_names) == 1000
    with pytest.raises(FileNotFoundError, match="IMAGENET_V2_DIR"):
        load_eval("imagenet-v2", download=False)


def test_cifar100_reads_torchvisions_on_disk_format(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine = [f"class_{i}" for i in range(100)]
    fine[1] = "aquarium_fish"
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": fine, "coarse_label_names": []}, handle)
    batch = {"data": np.random.default_rng(0).integers(0, 255, (6, 3072), dtype=np.uint8),
             "fine_labels": [1, 1, 2, 3, 3, 3]}
    with open(folder / "test", "wb") as handle:
        pickle.dump(batch, handle)
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *args: True)  # a miniature cannot match the real md5s
    evalset = load_eval("cifar100", root=tmp_path, download=False)
    assert evalset.labels.tolist() == [1, 1, 2, 3, 3, 3] and evalset.images[0].size == (32, 32)
    assert evalset.class_names[1] == "aquarium fish" and len(evalset.templates) == 18
    assert evalset.templates[0] == "a photo of a {c}."


def test_pets_reads_torchvisions_on_disk_format_with_the_authors_prompts(tmp_path):
    base = tmp_path / "oxford-iiit-pet"
    write_images(base / "images", ["Abyssinian_1.jpg", "yorkshire_terrier_9.jpg"])
    (base / "annotations").mkdir()
    (base / "annotations" / "test.txt").write_text("Abyssinian_1 1 1 1\nyorkshire_terrier_9 37 2 25\n")
    evalset = load_eval("pets", root=tmp_path, download=False)
    assert evalset.labels.tolist() == [0, 36] and [p.name for p in evalset.images] == \
        ["Abyssinian_1.jpg", "yorkshire_terrier_9.jpg"]
    assert evalset.class_names[36] == "yorkshire terrier dog" and evalset.templates[0] == "a type of pet {c}."


def test_classnames_and_templates_from_clip_benchmark_json(tmp_path):
    (tmp_path / "names.json").write_text(json.dumps({"imagenet1k": [f"thing {i}" for i in range(1000)]}))
    (tmp_path / "templates.json").write_text(json.dumps({"imagenet1k": ["a {} here."], "cifar10": ["x {c}"]}))
    evalset = load_eval("imagenet-samples", classnames=tmp_path / "names.json", templates=tmp_path / "templates.json")
    assert evalset.class_names[3] == "thing 3" and evalset.templates == ["a {c} here."]
    with pytest.raises(ValueError, match="no {c} placeholder"):
        load_eval("imagenet-samples", templates=["a photo."])
    with pytest.raises(ValueError, match="1000 classes"):
        load_eval("imagenet-samples", classnames=["a", "b"])
    with pytest.raises(ValueError, match="not an evaluation set"):
        load_eval("coco")


# ------------------------------------------------------------------------------------------ the real demo data

@pytest.fixture(scope="session")
def real_demo():
    """The real demo collection, built by the same `prepare` as `make data` (a no-op on a warm cache)."""
    data.prepare("demo", progress=False)
    return load_collection("demo")


@pytest.mark.slow
def test_real_demo_collection_counts_split_and_order(real_demo):
    counts = {source: sum(p.source == source for p in real_demo) for source in ("tuxpaint", "openclipart", "emoji")}
    assert 4500 <= len(real_demo) <= 5500, counts
    assert 450 <= counts["tuxpaint"] <= 650 and 2200 <= counts["openclipart"] <= 2800 and 1800 <= counts["emoji"] <= 2000
    assert real_demo.ids == sorted(real_demo.ids, key=lambda i: data._stable_hash("asif-demo-order:" + i))
    first = real_demo[:500]
    assert all(sum(p.source == s for p in first) > 30 for s in counts)  # a prefix mixes all three sources
    assert not any(keep_title(c) is None and p.source == "openclipart" for p, c in zip(real_demo, real_demo.captions)
                   if "gramastar" in c or "clipart by" in c)
    assert {s["package"]: s["licence"] for s in real_demo.sources}["tuxpaint-stamps-default"] == "GPL-2"

    heldout = load_eval("tuxpaint-heldout")
    assert 100 <= len(heldout) <= 200 and not set(heldout.ids) & set(real_demo.ids)
    assert not {c.lower() for c in heldout.captions} & {c.lower() for c in real_demo.captions if c}
    assert all((heldout.labels == k).sum() >= 1 for k in range(len(heldout.class_names)))
    assert "symbols" not in heldout.class_names


@pytest.mark.slow
def test_real_fashion_mnist_test_split(real_demo):
    evalset = load_eval("fashion-mnist")
    assert len(evalset) == 10_000 and np.bincount(evalset.labels).tolist() == [1000] * 10
    assert evalset.images[0].size == (28, 28)
    subset = load_eval("fashion-mnist", n=100)
    assert np.bincount(subset.labels).tolist() == [10] * 10


def test_an_unpacked_package_is_reused_without_fetching(cache, tmp_path, monkeypatch):
    from asif_nb import download

    name = download.load_manifest()["dataset-fashion-mnist"]["files"][0]["name"]
    folder = cache / "sources" / "dataset-fashion-mnist"
    folder.mkdir(parents=True)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28), dtype=np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([3, 4], dtype=np.uint8))
    (folder / ".unpacked.json").write_text(json.dumps({"file": name, "version": "x"}))

    def no_fetch(artifact_id, **kwargs):
        raise AssertionError("fetch must not be called for an unpacked package")

    monkeypatch.setattr(download, "fetch", no_fetch)
    assert load_eval("fashion-mnist").labels.tolist() == [3, 4]
    (folder / ".unpacked.json").write_text(json.dumps({"file": "an-older-version.deb", "version": "x"}))
    with pytest.raises(AssertionError, match="must not be called"):
        load_eval("fashion-mnist")
