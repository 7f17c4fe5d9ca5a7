"""Getting a user's images into a notebook, wherever it runs.

Colab: its upload dialog and the webcam through JavaScript ``getUserMedia``. Local Jupyter: an ipywidgets
``FileUpload`` (or a path). Headless runs (papermill, nbmake, CI): the bundled sample photos, so "run all"
always completes. Each function returns PIL images; nothing here blocks waiting for a person.
"""
from __future__ import annotations

import base64
import io
import os
import sys

from PIL import Image

# scikit-image ships these photos inside its wheel, so they exist offline.
SAMPLE_PHOTOS = {
    "a photo of a cat": "chelsea",
    "a photo of an astronaut": "astronaut",
    "a cup of coffee": "coffee",
    "a rocket on the launch pad": "rocket",
    "a man with a camera": "camera",
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
    """Caption → PIL image for the photos bundled with scikit-image (offline)."""
    from skimage import data

    images = {}
    for caption, name in SAMPLE_PHOTOS.items():
        array = getattr(data, name)()
        images[caption] = Image.fromarray(array).convert("RGB")
    return images


def upload_widget(multiple: bool = True):
    """An ipywidgets FileUpload for local Jupyter; read it later with :func:`uploaded_images`."""
    import ipywidgets

    return ipywidgets.FileUpload(accept="image/*", multiple=multiple, description="Upload images")


def uploaded_images(widget) -> dict[str, Image.Image]:
    """File name → PIL image for what a FileUpload widget holds (empty if nothing was uploaded)."""
    images = {}
    for item in widget.value or ():  # ipywidgets 8: a tuple of dicts with 'name' and 'content'
        images[item["name"]] = Image.open(io.BytesIO(bytes(item["content"])))
    return images


def colab_upload() -> dict[str, Image.Image]:
    """Colab's own upload dialog (blocks until the user picks files); file name → PIL image."""
    from google.colab import files  # type: ignore[import-not-found]

    return {name: Image.open(io.BytesIO(content)) for name, content in files.upload().items()}


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
