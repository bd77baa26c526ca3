"""Turning images of any source (grey or colour, any size) into a learner's input tensor."""

from __future__ import annotations

from collections.abc import Sequence

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
