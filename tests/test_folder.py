"""folder:<path> collections: the three layouts, and every way a folder can be wrong answered by an error that
names the file and the fix — never a pair silently dropped, mangled or read from somewhere else."""
from __future__ import annotations

import json

import pytest

from asif_nb.data import load_collection


def test_folder_collection_from_csv_jsonl_and_txt(tmp_path, write_images):
    csv_dir = tmp_path / "csv"
    write_images(csv_dir, ["b.png", "a.png", "c.png"])
    (csv_dir / "captions.csv").write_text('image,caption,id\nb.png,a bee,bee\na.png,an ant,\nc.png,"a cat, asleep",\n')
    collection = load_collection(f"folder:{csv_dir}")
    assert collection.ids == ["bee", "a.png", "c.png"]  # file order kept
    assert collection.captions == ["a bee", "an ant", "a cat, asleep"]
    assert collection[0].load_image().size == (8, 8)

    jsonl_dir = tmp_path / "jsonl"
    write_images(jsonl_dir, ["x.png", "y.png"])
    (jsonl_dir / "captions.jsonl").write_text(json.dumps({"image": "x.png", "caption": "an x"}) + "\n\n"
                                              + json.dumps({"image": "y.png", "caption": "a y", "id": 7}) + "\n")
    assert load_collection(f"folder:{jsonl_dir}").captions == ["an x", "a y"]
    assert load_collection(f"folder:{jsonl_dir}").ids == ["x.png", "7"]

    txt_dir = tmp_path / "txt"
    write_images(txt_dir, ["b.png", "a.jpg"])
    (txt_dir / "b.txt").write_text("bee\nsecond line ignored")
    (txt_dir / "a.txt").write_text("ant")
    (txt_dir / "notes.md").write_text("other files are not pairs")
    collection = load_collection(f"folder:{txt_dir}", n_pairs=2)
    assert collection.ids == ["a", "b"] and collection.captions == ["ant", "bee"]


def test_txt_layout_refuses_an_image_without_caption_and_a_caption_without_image(tmp_path, write_images):
    write_images(tmp_path, ["a.png", "b.png", "no_caption.png"])
    (tmp_path / "a.txt").write_text("ant")
    (tmp_path / "b.txt").write_text("bee")
    with pytest.raises(ValueError, match=r"1 image\(s\) without a caption file \(no_caption.png\): write") as error:
        load_collection(f"folder:{tmp_path}")
    assert "<name>.txt" in str(error.value)

    (tmp_path / "no_caption.png").unlink()
    (tmp_path / "README.txt").write_text("my pictures")
    (tmp_path / "gift.txt").write_text("a gift")
    with pytest.raises(ValueError, match=r"2 .txt file\(s\) without an image \(README.txt, gift.txt\): add the image"):
        load_collection(f"folder:{tmp_path}")
    (tmp_path / "README.txt").unlink()
    (tmp_path / "gift.txt").unlink()
    assert load_collection(f"folder:{tmp_path}").ids == ["a", "b"]


@pytest.mark.parametrize("caption, kind", [(["a", "cat"], "list"), ({"en": "a cat"}, "dict"), (5, "int"),
                                           (None, "NoneType"), (True, "bool")])
def test_jsonl_captions_must_be_strings(tmp_path, write_images, caption, kind):
    write_images(tmp_path, ["x.png"])
    (tmp_path / "captions.jsonl").write_text(json.dumps({"image": "x.png", "caption": caption}) + "\n")
    with pytest.raises(ValueError, match=f"captions.jsonl line 1: caption is {kind} .*not a string"):
        load_collection(f"folder:{tmp_path}")


def test_jsonl_image_and_id_types_are_checked(tmp_path, write_images):
    write_images(tmp_path, ["x.png"])
    (tmp_path / "captions.jsonl").write_text(json.dumps({"image": ["x.png"], "caption": "an x"}) + "\n")
    with pytest.raises(ValueError, match="image is list"):
        load_collection(f"folder:{tmp_path}")
    (tmp_path / "captions.jsonl").write_text(json.dumps({"image": "x.png", "caption": "an x", "id": [1]}) + "\n")
    with pytest.raises(ValueError, match="id is list .*not a string or an int"):
        load_collection(f"folder:{tmp_path}")


@pytest.mark.parametrize("name", ["captions.csv", "captions.jsonl", "x.txt"])
def test_a_caption_file_that_is_not_utf8_is_named_with_the_fix(tmp_path, write_images, name):
    write_images(tmp_path, ["x.png"])
    rows = {"captions.csv": "image,caption\nx.png,caf\xe9 au lait\n",
            "captions.jsonl": json.dumps({"image": "x.png", "caption": "caf\xe9"}, ensure_ascii=False) + "\n",
            "x.txt": "caf\xe9 au lait\n"}
    (tmp_path / name).write_bytes(rows[name].encode("latin-1"))  # what a spreadsheet saves as "CSV" on Windows
    with pytest.raises(ValueError, match=f"{name} is not UTF-8 text .*line [12].*save it as UTF-8"):
        load_collection(f"folder:{tmp_path}")


def test_a_utf8_csv_with_a_byte_order_mark_is_read(tmp_path, write_images):
    write_images(tmp_path, ["x.png"])
    (tmp_path / "captions.csv").write_bytes("image,caption\nx.png,café au lait\n".encode("utf-8-sig"))
    assert load_collection(f"folder:{tmp_path}").captions == ["café au lait"]


def test_an_unquoted_comma_in_a_csv_caption_is_refused_not_cut(tmp_path, write_images):
    write_images(tmp_path, ["x.png"])
    (tmp_path / "captions.csv").write_text("image,caption\nx.png,a cat, asleep on a mat\n")
    with pytest.raises(ValueError, match="captions.csv line 2 has more fields than the header .*double quotes"):
        load_collection(f"folder:{tmp_path}")


@pytest.mark.parametrize("path", ["", "   "])
def test_an_empty_folder_path_is_refused_not_read_as_the_current_folder(tmp_path, write_images, monkeypatch, path):
    write_images(tmp_path, ["x.png"])
    (tmp_path / "x.txt").write_text("an x")
    monkeypatch.chdir(tmp_path)  # a valid collection is right here: it must not be picked up silently
    with pytest.raises(ValueError, match=r"no folder named.*folder:\. for the current folder"):
        load_collection(f"folder:{path}")
    assert load_collection("folder:.").captions == ["an x"]


@pytest.mark.parametrize("rows, message", [
    ("image,caption\nmissing.png,a thing\n", "missing"),
    ("image,caption\nbroken.png,a thing\n", "unreadable"),
    ("image,caption\nok.png,   \n", "empty"),
    ("image,caption,id\nok.png,one,same\nok2.png,two,same\n", "duplicate id"),
    ("picture,text\nok.png,one\n", "image,caption"),
    ("image,caption\n", "no captions found"),
])
def test_folder_validation_errors_name_the_problem(tmp_path, write_images, rows, message):
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
