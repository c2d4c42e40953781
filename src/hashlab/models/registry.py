"""The model-side registries: backbones (image → features) and heads (features → code).

- ``BACKBONES``: ``factory(in_channels=, **model.backbone_args)`` → a module with
  ``feature_dim``.
- ``HEADS``: ``factory(in_dim=, dim=, **model.head_args)`` → a module with ``dim``, ``binary``
  and ``pre_activation``.
"""

from __future__ import annotations

from torch import nn

from hashlab.registry import Registry

BACKBONES: Registry[nn.Module] = Registry(
    "backbone", packages=("hashlab.models",),
    description="feature extractors: image [B, C, H, W] -> features [B, feature_dim]")
HEADS: Registry[nn.Module] = Registry(
    "head", packages=("hashlab.models",),
    description="code layers: features -> float embedding or relaxed hash code")
