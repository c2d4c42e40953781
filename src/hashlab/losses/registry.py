"""The loss registry: config name → ``nn.Module`` factory (``num_classes``, ``dim``, args)."""

from __future__ import annotations

from torch import nn

from hashlab.registry import Registry

LOSSES: Registry[nn.Module] = Registry("loss")
