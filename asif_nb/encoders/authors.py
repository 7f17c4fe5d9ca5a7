"""The ASIF authors' image preprocessing, reproduced operation for operation.

The authors feed both of their image encoders (``VIT`` = google/vit-base-patch16-224-in21k, and ``DINO``) with::

    Compose([ToTensor(), Normalize(IMAGENET_MEAN, IMAGENET_STD), Resize((224, 224))])

i.e. the whole image, normalised first and then resized (bilinear, no crop) as a float tensor. Their torchvision
of 2023 resized tensors without antialiasing (the ``antialias`` default only became True in torchvision 0.17), so
``antialias=False`` here: that is how the precomputed ImageNet/CIFAR/Pets embeddings they distribute were made,
and anchors embedded any other way would not live in the same space as those embeddings.

``authors_tensor_preprocess`` is that pipeline as torchvision (v2) tensor ops on a uint8 tensor; the encoders'
``prepare`` runs the same function on the CPU, and a streaming embedder can run it on a GPU-decoded image.
"""
from __future__ import annotations

from .base import IMAGE_DECODE, IMAGENET_MEAN, IMAGENET_STD

AUTHORS_SIZE = 224
AUTHORS_ANTIALIAS = False
AUTHORS_PREPROCESSING = (
    "ASIF authors' pipeline: ToTensor (uint8 -> float32 / 255), Normalize(ImageNet mean "
    f"{list(IMAGENET_MEAN)}, std {list(IMAGENET_STD)}), then Resize(({AUTHORS_SIZE}, {AUTHORS_SIZE})) of the "
    f"normalised tensor, bilinear, antialias={AUTHORS_ANTIALIAS} (their 2023 torchvision; matches their precomputed "
    "embeddings), no crop"
)
AUTHORS_CONFIG = {
    "recipe": "asif-authors",
    "decode": IMAGE_DECODE,
    "ops": [
        {"op": "to_float", "scale": "div 255"},
        {"op": "normalize", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        {"op": "resize", "size": [AUTHORS_SIZE, AUTHORS_SIZE], "interpolation": "bilinear",
         "antialias": AUTHORS_ANTIALIAS},
    ],
}


def authors_tensor_preprocess(pixels):
    """uint8 RGB torch tensor ``(3, H, W)`` or ``(n, 3, H, W)`` on any device → float32 ``(…, 3, 224, 224)`` on it.

    Bit-for-bit what ``torchvision.transforms.Compose([ToTensor(), Normalize(mean, std), Resize((224, 224),
    antialias=False)])`` gives for the same pixels on the CPU (``ToTensor`` divides by 255, which is not bit-equal
    to ``to_dtype(scale=True)``'s multiplication by 1/255, so the division is written out).
    """
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    if not isinstance(pixels, torch.Tensor) or pixels.dtype != torch.uint8:
        kind = f"a {pixels.dtype} tensor" if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise ValueError(f"tensor_preprocess expects a uint8 torch tensor (3, H, W), got {kind}: pass decoded 8-bit "
                         "RGB pixels, e.g. torchvision.io.decode_jpeg(data, mode=ImageReadMode.RGB).")
    if pixels.ndim not in (3, 4) or pixels.shape[-3] != 3:
        raise ValueError(f"tensor_preprocess expects RGB pixels shaped (3, H, W) or (n, 3, H, W), got "
                         f"{tuple(pixels.shape)}: decode with mode=ImageReadMode.RGB.")
    x = pixels.to(torch.float32).div(255)
    x = F.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))
    return F.resize(x, [AUTHORS_SIZE, AUTHORS_SIZE], interpolation=InterpolationMode.BILINEAR,
                    antialias=AUTHORS_ANTIALIAS)
