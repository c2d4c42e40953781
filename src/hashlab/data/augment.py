"""Seeded batch augmentations on image tensors [B, C, H, W] (no per-image Python loop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hashlab.config import AugmentConfig


class BatchAugment:
    """Random horizontal flip and random translation by up to ``crop_padding`` pixels
    (pad with zeros, crop back at a random offset), drawn per image from ``generator``."""

    def __init__(self, config: AugmentConfig) -> None:
        self.hflip = config.hflip
        self.pad = config.crop_padding

    @property
    def active(self) -> bool:
        return self.hflip or self.pad > 0

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        if self.hflip:
            flip = torch.rand(b, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if self.pad > 0:
            p = self.pad
            padded = F.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (b,), generator=generator)
            dx = torch.randint(0, 2 * p + 1, (b,), generator=generator)
            rows = (dy[:, None] + torch.arange(h))[:, :, None]  # [B, H, 1]
            cols = (dx[:, None] + torch.arange(w))[:, None, :]  # [B, 1, W]
            batch = torch.arange(b)[:, None, None]
            x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()
        return x
