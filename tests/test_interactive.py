"""The upload app and paths of notebooks 03 and 05, without a browser (issue #13 items 1-4): what ipywidgets'
FileUpload hands the kernel is fed to it directly."""
from __future__ import annotations

import datetime
import io

import pytest
from PIL import Image

from asif_nb import interactive
from asif_nb.interactive import ImageUpload, image_upload, pick_picture, read_images, resolve_path

SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="5" height="5"/></svg>'


def png_bytes(size=(40, 30), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def upload_value(files: dict[str, bytes]) -> tuple[dict, ...]:
    """What ipywidgets 8's FileUpload.value holds after the browser sent ``files``."""
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    return tuple({"name": name, "type": "", "size": len(content), "content": memoryview(content),
                  "last_modified": now} for name, content in files.items())


@pytest.fixture(autouse=True)
def headless(monkeypatch):
    monkeypatch.setenv("ASIF_HEADLESS", "1")
    monkeypatch.setattr(interactive, "_APPS", {})


def test_one_bad_file_costs_nothing_but_itself():
    images, problems = read_images(upload_value({"cat.png": png_bytes(), "drawing.svg": SVG,
                                                 "garbage.jpg": b"\x00not an image at all"}))
    assert list(images) == ["cat.png"] and images["cat.png"].mode == "RGB" and images["cat.png"].size == (40, 30)
    assert set(problems) == {"drawing.svg", "garbage.jpg"}
    assert "SVG" in problems["drawing.svg"] and "PNG, JPEG" in problems["drawing.svg"]
    assert "not an image" in problems["garbage.jpg"] and "PNG, JPEG" in problems["garbage.jpg"]
    # an SVG under an image's name is still recognised, by its content
    assert "SVG" in read_images([("renamed.png", SVG)])[1]["renamed.png"]


def test_heic_and_empty_files_say_what_works():
    _, problems = read_images([("IMG_0001.HEIC", b"\x00\x00\x00\x18ftypheic"), ("empty.png", b"")])
    assert "HEIC" in problems["IMG_0001.HEIC"] and "JPEG" in problems["IMG_0001.HEIC"]
    assert "empty" in problems["empty.png"]


def test_ipywidgets_7_and_colab_values_are_read_too():
    seven = {"a.png": {"metadata": {"name": "a.png"}, "content": png_bytes()}}
    colab = {"b.png": png_bytes()}
    assert list(read_images(seven)[0]) == ["a.png"]
    assert list(read_images(colab)[0]) == ["b.png"]


def test_the_app_lists_what_it_holds_and_keeps_it_across_uploads():
    app = ImageUpload(use="all")
    app.widget()  # the real ipywidgets app; the browser's upload lands in FileUpload.value
    app._upload.value = upload_value({"cat.png": png_bytes(), "drawing.svg": SVG, "garbage.jpg": b"junk"})
    assert list(app.images) == ["cat.png"] and set(app.problems) == {"drawing.svg", "garbage.jpg"}
    assert app._upload.value == ()  # read into the app; the button's own (cut-off) counter is reset
    app._upload.value = upload_value({"dog.jpg": png_bytes(colour=(0, 0, 200))})
    assert list(app.chosen) == ["cat.png", "dog.jpg"]
    status = app._status.value
    assert "Holding 2 images" in status and "cat.png" in status and "dog.jpg" in status
    assert "Skipped <b>drawing.svg</b>" in status and "Skipped <b>garbage.jpg</b>" in status
    # a bad file uploaded under a good file's name replaces it: the app never uses a stale image silently
    app.add([("dog.jpg", b"junk")])
    assert list(app.images) == ["cat.png"] and "dog.jpg" in app.problems
    app.clear()
    assert not app.images and not app.problems and "No image uploaded yet" in app._status.value


def test_html_in_a_file_name_is_escaped():
    app = ImageUpload()
    app.add([("<b>x</b>.png", png_bytes())])
    assert "&lt;b&gt;x&lt;/b&gt;.png" in app.status(markup=True)


def test_last_means_the_most_recent_upload():
    app = ImageUpload(use="last")
    app.add([("a.png", png_bytes()), ("b.png", png_bytes())])
    app.add([("a.png", png_bytes(colour=(0, 200, 0)))])
    assert list(app.chosen) == ["a.png"]
    assert "uses the last one, a.png," in app.status()


def test_one_app_per_kernel_shown_again_by_a_rerun(capsys):
    first = image_upload("all")
    first.add([("cat.png", png_bytes())])
    again = image_upload("all")  # re-running the cell, or Run All
    assert again is first and list(again.images) == ["cat.png"]
    again.show()  # a batch run: the status as text, no widget
    out = capsys.readouterr().out
    assert "Holding 1 image: cat.png" in out


def test_colab_dialog_outside_colab_says_so(capsys):
    image_upload("all").show(colab_dialog=True)
    assert "on Colab only" in capsys.readouterr().out


def test_paths_expand_home_and_fall_back_to_the_repository_root(tmp_path, monkeypatch):
    home, repo = tmp_path / "home", tmp_path / "repo"
    (home / "Pictures").mkdir(parents=True)
    (repo / "notebooks").mkdir(parents=True)
    (home / "Pictures" / "cat.png").write_bytes(png_bytes())
    (repo / "photos").mkdir()
    (repo / "photos" / "dog.png").write_bytes(png_bytes())
    (repo / "notebooks" / "here.png").write_bytes(png_bytes())
    monkeypatch.setenv("HOME", str(home))
    assert resolve_path("~/Pictures/cat.png") == (home / "Pictures" / "cat.png").resolve()
    start = repo / "notebooks"
    assert resolve_path("here.png", start) == (start / "here.png").resolve()  # the notebook's folder first
    assert resolve_path("photos/dog.png", start) == (repo / "photos" / "dog.png").resolve()  # then the repo root
    with pytest.raises(FileNotFoundError) as err:
        resolve_path("nowhere.png", start)
    assert str(start / "nowhere.png") in str(err.value) and str(repo / "nowhere.png") in str(err.value)


def test_pick_picture_says_plainly_what_it_cannot_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "cat.png").write_bytes(png_bytes((64, 48)))
    picture, source = pick_picture(use_camera=True)
    out = capsys.readouterr().out
    assert "Colab only" in out and "upload" in out and "image_path" in out
    assert "chelsea.png" in source and picture.mode == "RGB"
    picture, source = pick_picture(image_path="~/cat.png")
    assert picture.size == (64, 48) and source == "cat.png (image_path)"
    assert str(tmp_path / "cat.png") in capsys.readouterr().out
    picture, source = pick_picture(image_path="~/missing.jpg")
    assert "cannot be used" in capsys.readouterr().out and "chelsea.png" in source
    upload = ImageUpload(use="last")
    upload.add([("mine.png", png_bytes((20, 20)))])
    picture, source = pick_picture(upload=upload)
    assert source == "mine.png (your upload)" and picture.size == (20, 20)


def test_sample_photo_names_are_file_names_not_captions():
    names = list(interactive.sample_images())
    assert names == list(interactive.SAMPLE_PHOTOS) and all(name.endswith(".png") for name in names)
