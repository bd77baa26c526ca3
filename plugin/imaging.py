"""Turning images of any source (grey or colour, any size) into a learner's input tensor."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medmeta.datasets.medmnist import ImageSet

#: ITU-R BT.601 luma weights, for colour -> grey.
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def to_tensor(images: np.ndarray | torch.Tensor, channels: int, size: int | None = None) -> torch.Tensor:
    """uint8 ``(N, H, W)`` or ``(N, H, W, C)`` images -> float ``(N, channels, size, size)`` in [0, 1].

    Grey images are repeated to three channels; colour images are reduced to luma for one.
    """
    x = torch.as_tensor(np.asarray(images))
    if x.ndim == 3:
        x = x.unsqueeze(-1)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"expected (N, H, W) or (N, H, W, 1|3) images, got {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float() / 255.0
    if x.shape[1] != channels:
        if channels == 3:
            x = x.expand(-1, 3, -1, -1).contiguous()
        elif channels == 1:
            x = (x * _LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise ValueError(f"channels must be 1 or 3, got {channels}")
    if size is not None and x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def pool(sets: Sequence[ImageSet], channels: int, size: int | None = None,
         classes: set[str] | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Stack several image sets into one tensor with the global class key of every image.

    ``classes`` keeps only the images of those class keys (``"<data set>:<class>"``).
    """
    xs, keys = [], []
    for s in sets:
        k = s.item_keys()
        keep = np.ones(len(k), bool) if classes is None else np.isin(k, list(classes))
        xs.append(to_tensor(s.images[keep], channels, size))
        keys.append(k[keep])
    return torch.cat(xs), np.concatenate(keys)


def augment(x: torch.Tensor, generator: torch.Generator | None = None, *, shift: int = 3,
            grey: float = 0.0) -> torch.Tensor:
    """Random label-preserving variants of a batch ``(N, C, H, W)`` in [0, 1], for training.

    Horizontal flips, shifts of up to ``shift`` pixels (reflect padding), brightness and
    contrast jitter and, for colour batches, grey-scale with probability ``grey``. Batched,
    so it costs little next to a training step.
    """
    n, _, h, w = x.shape
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    x = torch.where((rand(n) < 0.5).view(-1, 1, 1, 1), x.flip(-1), x)
    if shift:
        padded = F.pad(x, (shift,) * 4, mode="reflect")
        i, j = torch.randint(0, 2 * shift + 1, (2,), generator=generator).tolist()
        x = padded[..., i:i + h, j:j + w]
    mean = x.mean((1, 2, 3), keepdim=True)
    x = ((x - mean) * (0.8 + 0.4 * rand(n, 1, 1, 1)) + mean + 0.2 * (rand(n, 1, 1, 1) - 0.5)).clamp(0, 1)
    if grey and x.shape[1] == 3:
        luma = (x * _LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True).expand_as(x)
        x = torch.where((rand(n) < grey).view(-1, 1, 1, 1), luma, x)
    return x


def read_images(paths: Sequence[str | Path]) -> np.ndarray:
    """Image files (PNG, JPEG, ... read with Pillow) -> uint8 ``(N, H, W)`` grey or ``(N, H, W, 3)`` colour.

    All must have one size; a set with any colour image is read as colour.
    """
    from PIL import Image, UnidentifiedImageError

    from medmeta.errors import DataError

    images = []
    for path in paths:
        try:
            with Image.open(path) as im:
                images.append(im.copy())
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"not a readable image ({exc})", source=path) from exc
    if not images:
        raise DataError("no images given")
    grey = all(im.mode in ("1", "L", "LA", "I", "I;16", "F") for im in images)
    arrays = [_to_uint8(im, grey) for im in images]
    for path, a in zip(paths, arrays, strict=True):
        if a.shape != arrays[0].shape:
            raise DataError(f"size {a.shape[:2]} differs from the first image's {arrays[0].shape[:2]}", source=path)
    return np.stack(arrays)


def _to_uint8(image: PIL.Image.Image, grey: bool) -> np.ndarray:  # noqa: F821
    """A PIL image as uint8; deeper grey images (16-bit, float) are scaled from their own range."""
    if image.mode in ("I", "I;16", "F"):
        a = np.asarray(image, dtype=np.float64)
        low, high = a.min(), a.max()
        a = np.zeros_like(a) if high == low else (a - low) / (high - low) * 255
        a = a.round().astype(np.uint8)
        return a if grey else np.repeat(a[..., None], 3, axis=-1)
    return np.asarray(image.convert("L" if grey else "RGB"), dtype=np.uint8)
