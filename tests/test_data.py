"""asif_nb.data: the demo's sources, its unpacking and build (on miniature packages and, marked slow, on the
real ones), two builds at once, `prepare` on the command line, and the collection API."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from asif_nb import data
from asif_nb.data import Collection, clean_title, filter_titles, heldout_split, keep_title, load_collection, load_eval

ROOT = Path(__file__).resolve().parents[1]


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

def test_unpack_package_reads_debs_and_npm_tarballs_without_dpkg(tmp_path, make_deb, make_npm):
    deb = make_deb(tmp_path / "p.deb", {"usr/share/x/a.txt": b"hello", "usr/share/x/a.ogg": b"sound"}, "2.5-1")
    folder = data.unpack_package(deb, "tuxpaint-stamps-default", dest=tmp_path / "out")
    assert (folder / "usr/share/x/a.txt").read_bytes() == b"hello"
    assert not (folder / "usr/share/x/a.ogg").exists()  # the filter leaves sounds packed
    assert json.loads((folder / ".unpacked.json").read_text())["version"] == "2.5-1"
    (folder / "usr/share/x/a.txt").write_text("kept")  # a second call reuses the unpacked folder
    assert data.unpack_package(deb, "tuxpaint-stamps-default", dest=tmp_path / "out") == folder
    assert (folder / "usr/share/x/a.txt").read_text() == "kept"
    npm = make_npm(tmp_path / "e.tgz", {"emoji.json": b"[]"}, "16.0.0")
    assert data.unpacked_version(data.unpack_package(npm, "emoji-datasource-google", dest=tmp_path / "e")) == "16.0.0"


def test_unpack_refuses_paths_outside_the_destination(tmp_path, make_deb):
    deb = make_deb(tmp_path / "evil.deb", {"usr/share/x/fine.txt": b"x", "../../escape.txt": b"x"})
    with pytest.raises(ValueError, match="outside the destination.*delete it and fetch it again"):
        data.unpack_package(deb, "other", dest=tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == [".out.lock"]  # no half unpack
    with pytest.raises(ValueError, match="not a .deb"):
        data.unpack_package((tmp_path / "bad.deb").write_bytes(b"junk") and tmp_path / "bad.deb", "x",
                            dest=tmp_path / "out2")


def test_unpack_takes_regular_files_only_and_keeps_them_inside(tmp_path, make_deb):
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    deb = make_deb(tmp_path / "p.deb", {"usr/share/x/a.svg": b"<svg/>", "/usr/share/x/abs.svg": b"<svg/>"},
                   links={"usr/share/x/dup.svg": "a.svg", "usr/share/x/out.svg": str(secret)})
    folder = data.unpack_package(deb, "openclipart-svg", dest=tmp_path / "out")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.svg")) == \
        ["usr/share/x/a.svg", "usr/share/x/abs.svg"]  # links stay packed; an absolute path lands inside


def test_a_missing_package_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.unpack_package(tmp_path / "nope.deb", "openclipart-svg", dest=tmp_path / "out")
    assert not (tmp_path / "out").exists()


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


def test_build_demo_on_miniatures_is_stable_and_never_leaks_heldout_pairs(temp_cache, mini_packages):
    folder = data.build_demo(packages=mini_packages, workers=1, progress=False)
    first = (folder / "pairs.jsonl").read_text()
    collection = load_collection("demo")
    assert isinstance(collection, Collection) and collection.name == "demo"
    assert {p.source for p in collection} == {"tuxpaint", "openclipart", "emoji"}
    assert collection.ids == sorted(collection.ids, key=lambda i: data.stable_hash("asif-demo-order:" + i))
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

    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask  # readable as a plain mkdir would make it
    assert stat.S_IMODE((folder / "pairs.jsonl").stat().st_mode) == 0o666 & ~umask

    data.build_demo(packages=mini_packages, workers=1, progress=False, force=True)
    assert (folder / "pairs.jsonl").read_text() == first
    assert load_collection("demo", n_pairs=5).ids == collection.ids[:5]


def test_a_failed_build_leaves_no_collection_behind(temp_cache, mini_packages, monkeypatch):
    def broken(folder):  # fails after every image is written, just before pairs.jsonl
        raise RuntimeError("disk full")

    monkeypatch.setattr(data.demo, "unpacked_version", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        data.build_demo(packages=mini_packages, workers=1, progress=False)
    assert not data.demo_dir().exists()
    assert [p.name for p in data.demo_dir().parent.iterdir()] == [".demo.lock"]  # no half-built folder


_BUILDER = """
import json, pathlib, sys, time
from asif_nb import data
ready, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.01)
data.build_demo(packages=json.loads(sys.argv[3]), workers=1, progress=True)
"""


def test_two_processes_building_the_demo_at_once_build_it_once(temp_cache, mini_packages, tmp_path):
    env = {**os.environ, "ASIF_CACHE": str(temp_cache), "PYTHONPATH": str(ROOT)}
    packages = json.dumps({k: str(v) for k, v in mini_packages.items()})
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _BUILDER, str(tmp_path / f"ready{i}"), str(go), packages],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)) and time.time() < deadline:
        time.sleep(0.01)
    go.touch()  # both start building at the same moment
    outputs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert sum("images written" in out for out, _ in outputs) == 1, outputs  # the other waited, then reused it
    assert len(load_collection("demo")) == json.loads((data.demo_dir() / "meta.json").read_text())["anchors"]
    assert sorted(p.name for p in data.demo_dir().parent.iterdir()) == [".demo.lock", "demo"]


# ------------------------------------------------------------------------------------------ prepare (the CLI)

@pytest.mark.parametrize("argument, message", [
    ("foo", "'foo' is not ID=FILE: write e.g. --package tuxpaint-stamps-default="),
    ("=x.deb", "is not ID=FILE"),
    ("tuxpaint=x.deb", "'tuxpaint' is not a package of the demo: use one of tuxpaint-stamps-default, "),
    ("openclipart-svg=/no/such.deb", "'/no/such.deb' is not a file"),
])
def test_prepare_refuses_a_bad_package_argument_with_a_usage_error(temp_cache, capsys, argument, message):
    with pytest.raises(SystemExit) as exit_:
        data.main(["prepare", "demo", "--package", argument])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "usage: python -m asif_nb.data prepare" in error and message in error
    assert not temp_cache.exists()  # nothing fetched, unpacked or built


def test_prepare_refuses_a_package_given_twice_and_unknown_ids_in_the_api(temp_cache, mini_packages, capsys):
    tux = str(mini_packages["tuxpaint-stamps-default"])
    with pytest.raises(SystemExit) as exit_:
        data.main(["prepare", "demo", "--package", f"tuxpaint-stamps-default={tux}",
                   "--package", f"tuxpaint-stamps-default={tux}"])
    assert exit_.value.code == 2 and "given more than once" in capsys.readouterr().err
    with pytest.raises(ValueError, match="'tuxpaint' is not a package of the demo"):
        data.prepare("demo", packages={"tuxpaint": tux})
    with pytest.raises(ValueError, match="is not a file"):
        data.build_demo(packages={"tuxpaint-stamps-default": tux + ".missing"})
    assert not temp_cache.exists()


def test_the_command_line_exits_non_zero_without_a_traceback(temp_cache):
    result = subprocess.run([sys.executable, "-m", "asif_nb.data", "prepare", "demo", "--package", "foo"], cwd=ROOT,
                            env={**os.environ, "ASIF_CACHE": str(temp_cache), "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "is not ID=FILE" in result.stderr and "Traceback" not in result.stderr


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


# ------------------------------------------------------------------------------------------ streamed collections

def test_streamed_collections_are_never_written_as_image_files_and_say_how_to_embed_them(temp_cache):
    for name in ("cc12m", "cc3m"):
        with pytest.raises(ValueError, match=f"python -m asif_nb.embed {name}"):
            load_collection(name, n_pairs=4)
    assert not (data.cache_dir() / "collections" / "cc12m").exists()


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
    assert real_demo.ids == sorted(real_demo.ids, key=lambda i: data.stable_hash("asif-demo-order:" + i))
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


