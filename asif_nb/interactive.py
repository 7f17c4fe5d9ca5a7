"""Getting a user's images into a notebook, wherever it runs (notebooks 03 and 05).

- **Jupyter (Lab, Notebook, VS Code)**: :func:`image_upload` — one upload app per kernel (a button, the list of
  what it holds, a button to clear it). Re-running its cell or "Run All" shows the *same* app again, still holding
  its files; only a kernel restart empties it. A file that cannot be read is reported by name and skipped; the
  good ones are kept.
- **Colab**: its own upload dialog (:func:`colab_upload`) and the webcam (:func:`colab_camera_snapshot`).
- **A path**: :func:`resolve_path` expands ``~`` and looks a relative path up in the notebook's folder, then in
  the repository root (the folder above ``notebooks/``).
- **Batch runs** (papermill, nbclient, nbmake, CI; :func:`has_frontend` is False): no widget is shown (nothing to
  click, and a saved widget would read "Error displaying widget"), the status is printed as text, and the bundled
  sample photos stand in, so "run all" always completes. Nothing here blocks waiting for a person.
"""
from __future__ import annotations

import base64
import html
import io
import os
import sys
import warnings
from pathlib import Path

from PIL import Image

# scikit-image ships these photos inside its wheel, so they exist offline. Named like files (what an upload is
# called), never like a caption: in notebook 03 the images' names stand beside the texts they are scored against.
SAMPLE_PHOTOS = {
    "chelsea.png": "chelsea",
    "astronaut.png": "astronaut",
    "coffee.png": "coffee",
    "rocket.png": "rocket",
    "camera.png": "camera",
}
SAMPLE_CAT = "chelsea.png"  # scikit-image's cat

# What Pillow reads here; every other upload is skipped with a message naming these.
READABLE = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".gif": "GIF", ".bmp": "BMP", ".webp": "WEBP",
            ".tif": "TIFF", ".tiff": "TIFF"}
FORMATS = "PNG, JPEG, GIF, BMP, WEBP or TIFF"
ACCEPT = ",".join(["image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp", "image/tiff", *READABLE])
MAX_SIDE = 1024  # uploads are shrunk to this longest side: the encoders look at a few hundred pixels at most
_WHY_NOT = {
    ".svg": "SVG is a vector drawing, which this notebook does not rasterise: export it as PNG",
    ".svgz": "SVG is a vector drawing, which this notebook does not rasterise: export it as PNG",
    ".heic": "HEIC/HEIF (the iPhone's photo format) cannot be read here: export it as JPEG (or set the phone's "
             "Camera → Formats to “Most Compatible”)",
    ".heif": "HEIC/HEIF (the iPhone's photo format) cannot be read here: export it as JPEG",
    ".avif": "AVIF cannot be read here: export it as JPEG or PNG",
    ".pdf": "a PDF is a document, not an image: export the page as PNG",
}


def in_colab() -> bool:
    return "google.colab" in sys.modules


def has_frontend() -> bool:
    """Is a person looking at this kernel: Colab, or a notebook opened in Jupyter (JupyterLab / Notebook start
    kernels with ``JPY_SESSION_NAME`` set) or VS Code? Batch runs (papermill, nbclient, nbmake, CI) have none: they
    get static figures instead of widgets, so no widget is left in a saved output to fail after a reopen."""
    if os.environ.get("ASIF_HEADLESS") == "1":
        return False
    return in_colab() or bool(os.environ.get("JPY_SESSION_NAME")) or "VSCODE_PID" in os.environ


def sample_images() -> dict[str, Image.Image]:
    """File-like name → PIL image for the photos bundled with scikit-image (offline)."""
    from skimage import data

    return {name: Image.fromarray(getattr(data, source)()).convert("RGB") for name, source in SAMPLE_PHOTOS.items()}


# ----------------------------------------------------------------------------------------------- reading files

def read_image(name: str, content) -> Image.Image:
    """One uploaded file (its name and bytes) as an RGB PIL image, or a ``ValueError`` that says, in words, why
    not and which formats work. EXIF rotation is applied, transparency lands on white, and the image is shrunk to
    ``MAX_SIDE`` pixels on its longest side."""
    from .images import to_rgb

    suffix = Path(str(name)).suffix.lower()
    if suffix in _WHY_NOT:
        raise ValueError(f"{_WHY_NOT[suffix]}. Formats that work: {FORMATS}.")
    data = bytes(content)
    if not data:
        raise ValueError("the file is empty.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # a big phone panorama is fine
            image = Image.open(io.BytesIO(data))
            image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a smaller scale, fast
            image.load()
    except Image.DecompressionBombError:
        raise ValueError("the image is too large to open safely (over 178 million pixels): shrink it first.") from None
    except Exception as err:  # Pillow raises many types for a file it cannot read
        kind = "an SVG drawing" if data.lstrip()[:5] in (b"<?xml", b"<svg ") else "not an image Pillow can read"
        raise ValueError(f"{kind} ({type(err).__name__}). Formats that work: {FORMATS}.") from None
    image = to_rgb(image)
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    return image


def uploaded_files(value) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of each file in an ipywidgets ``FileUpload.value``: ipywidgets 8's tuple of dicts
    (``name``, ``content``) or ipywidgets 7's dict ``{name: {"metadata": ..., "content": ...}}`` (Colab's), or
    Colab's ``files.upload()`` dict ``{name: bytes}``."""
    if not value:
        return []
    if isinstance(value, dict):
        return [(str(name), bytes(item["content"] if isinstance(item, dict) else item)) for name, item in value.items()]
    return [(str(item["name"]), bytes(item["content"])) for item in value]


def read_images(files) -> tuple[dict[str, Image.Image], dict[str, str]]:
    """``(images, problems)`` for uploaded files (``[(name, bytes), ...]`` or a ``FileUpload.value``): every
    readable file as ``{name: image}``, every other one as ``{name: why}``. Never raises for a bad file: one
    unreadable upload must not cost the good ones."""
    if isinstance(files, dict) or (files and not isinstance(next(iter(files)), tuple)):
        files = uploaded_files(files)
    images, problems = {}, {}
    for name, content in files:
        try:
            images[name] = read_image(name, content)
            problems.pop(name, None)
        except ValueError as err:
            problems[name] = str(err)
            images.pop(name, None)
    return images, problems


def uploaded_images(widget) -> dict[str, Image.Image]:
    """File name → PIL image for what a ``FileUpload`` widget (or an :class:`ImageUpload`) holds; unreadable files
    are left out (:func:`read_images` says why)."""
    if isinstance(widget, ImageUpload):
        return dict(widget.images)
    return read_images(uploaded_files(widget.value))[0]


# --------------------------------------------------------------------------------------------- the upload app

class ImageUpload:
    """An upload button, what it holds, and a button to empty it — one per kernel (see :func:`image_upload`).

    Each upload *adds* its readable files to :attr:`images` (a file uploaded again under the same name replaces
    the old one) and lists the unreadable ones, by name and why, in :attr:`problems`. ``use`` says what the
    notebook takes from it: ``"all"`` (notebook 03) or ``"last"`` (notebook 05: the most recent upload); the
    status line says so. The widgets are built only when shown to a person (:meth:`show`); without a front end the
    status is printed, and :meth:`add` feeds files directly (what a test or Colab's upload dialog does).
    """

    def __init__(self, use: str = "all", then: str = "run the cells below again (or Run All)"):
        if use not in ("all", "last"):
            raise ValueError(f"use={use!r}: 'all' (every held image) or 'last' (the most recent upload).")
        self.use, self.then = use, then
        self.images: dict[str, Image.Image] = {}
        self.problems: dict[str, str] = {}
        self._upload = self._status = self._clear = self._box = None

    # -- what it holds -------------------------------------------------------------------------------------
    def add(self, files) -> None:
        """Read uploaded files (``[(name, bytes)]``, a ``FileUpload.value`` or Colab's ``{name: bytes}``) into
        the app: good ones are held, bad ones reported by name."""
        images, problems = read_images(files)
        for name in images:
            self.images.pop(name, None)  # re-inserted last: "last" means the most recent upload
            self.problems.pop(name, None)
        self.images.update(images)
        for name in problems:
            self.images.pop(name, None)
        self.problems.update(problems)
        self._refresh()

    def clear(self) -> None:
        self.images.clear()
        self.problems.clear()
        self._refresh()

    @property
    def chosen(self) -> dict[str, Image.Image]:
        """What the notebook uses: every held image (``use="all"``) or the last one uploaded (``"last"``)."""
        if self.use == "last" and self.images:
            name = next(reversed(self.images))
            return {name: self.images[name]}
        return dict(self.images)

    def status(self, markup: bool = False) -> str:
        """One short paragraph: how many files it holds, their names, what will be used, what was skipped and why."""
        b = (lambda text: f"<b>{html.escape(text)}</b>") if markup else (lambda text: text)
        esc = html.escape if markup else (lambda text: text)
        names = list(self.images)
        if names:
            shown = ", ".join(b(name) for name in names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
            if self.use == "last" and len(names) > 1:
                use = f"the notebook uses the last one, {b(names[-1])},"
            else:
                use = "the notebook uses " + ("it" if len(names) == 1 else f"all {len(names)}")
            lines = [f"Holding {len(names)} image{'s' if len(names) != 1 else ''}: {shown} — {use} when you "
                     f"{esc(self.then)}. Kept until the kernel restarts."]
        else:
            lines = [f"No image uploaded yet: the notebook uses its bundled sample photo{'s' if self.use == 'all' else ''}. "
                     f"Upload {FORMATS} files, then {esc(self.then)}."]
        for name, why in self.problems.items():
            lines.append(f"Skipped {b(name)}: {esc(why)}")
        return ("<br>" if markup else "\n").join(lines)

    # -- the widgets -----------------------------------------------------------------------------------------
    def widget(self):
        """The app as one ipywidgets box (built once; displaying it again shows the same widgets and state).
        CSS classes for a browser test: ``asif-upload`` (the button; its ``input[type=file]`` takes the files),
        ``asif-upload-status`` (what it holds), ``asif-upload-clear``."""
        if self._box is None:
            import ipywidgets

            self._upload = ipywidgets.FileUpload(accept=ACCEPT, multiple=True, description="Upload images",
                                                 layout=ipywidgets.Layout(width="auto"))
            self._clear = ipywidgets.Button(description="Clear uploads", icon="trash",
                                            layout=ipywidgets.Layout(width="auto"))
            self._status = ipywidgets.HTML()
            self._upload.add_class("asif-upload")
            self._clear.add_class("asif-upload-clear")
            self._status.add_class("asif-upload-status")
            self._upload.observe(self._on_upload, names="value")
            self._clear.on_click(lambda _: self.clear())
            self._box = ipywidgets.VBox([ipywidgets.HBox([self._upload, self._clear]), self._status])
            self._refresh()
        return self._box

    def _on_upload(self, change) -> None:
        files = uploaded_files(change["new"])
        if not files:
            return
        self.add(files)
        self._upload.value = ()  # the app holds them now; the button's own counter would only repeat (and be cut off)

    def _refresh(self) -> None:
        if self._status is not None:
            self._status.value = self.status(markup=True)

    def show(self, colab_dialog: bool = False) -> None:
        """Display the app to a person in Jupyter or VS Code, or print its status in a batch run (there is no one to
        click there, and no widget may be left behind in the saved notebook). On Colab, ``colab_dialog=True``
        opens Colab's own upload dialog (its files join the app, checked the same way); elsewhere it says so."""
        from IPython.display import display

        if colab_dialog:
            if in_colab():
                from google.colab import files  # type: ignore[import-not-found]

                self.add(uploaded_files(files.upload()))
            else:
                print("use_upload=True opens Colab's upload dialog, on Colab only: here, use the upload button.")
        if has_frontend() and not in_colab():
            display(self.widget())
            return
        print(self.status())
        if in_colab() and not colab_dialog:
            print("On Colab: set use_upload=True (the form above) and run this cell to open Colab's upload dialog.")

_APPS: dict[str, ImageUpload] = {}


def image_upload(use: str = "all", then: str = "run the cells below again (or Run All)") -> ImageUpload:
    """The kernel's upload app for ``use`` ("all" or "last"): created on the first call, the same object on every
    later call, so re-running the cell (or Run All) shows the same button still holding its files."""
    app = _APPS.get(use)
    if app is None:
        app = _APPS[use] = ImageUpload(use=use, then=then)
    app.then = then
    return app


# --------------------------------------------------------------------------------------------------- paths

def resolve_path(path, start: str | os.PathLike | None = None) -> Path:
    """The file a user means by ``path``. ``~`` is the home folder (``$VARS`` are expanded too); an absolute path is
    used as it is; a relative one is looked up in the notebook's folder (the kernel's working directory, where
    Jupyter, VS Code and ``make lab`` start it; ``/content`` on Colab), then in the repository root (the folder
    above ``notebooks/``, where the README's paths start). ``FileNotFoundError`` names every place it looked."""
    text = str(path).strip().strip('"').strip("'")
    if not text:
        raise FileNotFoundError("no path given.")
    expanded = Path(os.path.expandvars(os.path.expanduser(text)))
    if expanded.is_absolute():
        places = [expanded]
    else:
        here = Path(start) if start is not None else Path.cwd()
        places = [here / expanded]
        if here.name == "notebooks":
            places.append(here.parent / expanded)
    for place in places:
        if place.is_file():
            return place.resolve()
    looked = " and ".join(str(place) for place in places)
    raise FileNotFoundError(f"no file {text!r}: looked at {looked}.")


def open_image(path, start=None) -> tuple[Image.Image, Path]:
    """``(image, resolved path)`` of an image file named as a user would (:func:`resolve_path`); a ``ValueError``
    says why a file that exists cannot be read."""
    where = resolve_path(path, start)
    return read_image(where.name, where.read_bytes()), where


def pick_picture(image_path: str = "", use_camera: bool = False, upload: ImageUpload | None = None
                 ) -> tuple[Image.Image, str]:
    """Notebook 05's picture and a short name for where it came from, in this order: Colab's webcam (``use_camera``, Colab only),
    ``image_path`` (:func:`resolve_path`), the last image uploaded to ``upload``, the bundled cat. A choice that
    cannot be honoured is said in one plain line and the next one is used: "run all" never stops here."""
    if use_camera:
        if in_colab():
            return colab_camera_snapshot(), "the webcam (Colab)"
        print("use_camera=True works on Colab only (it uses Colab's bridge to the browser's camera). Here, take a "
              "photo with your webcam or phone app and upload it with the button above, or set image_path.")
    held = upload.chosen if upload is not None else {}
    if image_path:
        try:
            image, where = open_image(image_path)
            if held:
                print(f"image_path is set, so it is used rather than your upload {next(iter(held))} "
                      "(empty image_path to use the upload).")
            print(f"image_path {image_path!r} is {where}")
            return image, f"{where.name} (image_path)"
        except (FileNotFoundError, ValueError) as err:
            print(f"image_path={image_path!r} cannot be used: {err} The next source is used instead.")
    if held:
        name, image = next(iter(held.items()))
        return image, f"{name} (your upload)"
    return sample_images()[SAMPLE_CAT], f"{SAMPLE_CAT} (the bundled sample photo)"


# ----------------------------------------------------------------------------------------------------- Colab

def colab_upload() -> dict[str, Image.Image]:
    """Colab's own upload dialog (blocks until the user picks files); file name → PIL image. Unreadable files are
    reported by name and skipped."""
    from google.colab import files  # type: ignore[import-not-found]

    images, problems = read_images(uploaded_files(files.upload()))
    for name, why in problems.items():
        print(f"Skipped {name}: {why}")
    return images


_CAMERA_JS = """
async function takePhoto(quality) {
  const div = document.createElement('div');
  const button = document.createElement('button');
  button.textContent = 'Capture';
  div.appendChild(button);
  const video = document.createElement('video');
  video.style.display = 'block';
  const stream = await navigator.mediaDevices.getUserMedia({video: true});
  document.body.appendChild(div);
  div.appendChild(video);
  video.srcObject = stream;
  await video.play();
  google.colab.output.setIframeHeight(document.documentElement.scrollHeight, true);
  await new Promise((resolve) => button.onclick = resolve);
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext('2d').drawImage(video, 0, 0);
  stream.getVideoTracks()[0].stop();
  div.remove();
  return canvas.toDataURL('image/jpeg', quality);
}
"""


def colab_camera_snapshot(quality: float = 0.85) -> Image.Image:
    """One webcam frame on Colab: shows the camera and a Capture button, returns the frame."""
    from google.colab.output import eval_js  # type: ignore[import-not-found]
    from IPython.display import Javascript, display

    display(Javascript(_CAMERA_JS))
    data_url = eval_js(f"takePhoto({quality})")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB")
