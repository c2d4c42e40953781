"""Backbones: image tensor [B, C, H, W] → feature vector [B, feature_dim].

Each also gives its last feature map, ``feature_map(x)`` → ``[B, feature_channels, h, w]``
(before pooling), for heads that work on spatial features (``takes_feature_map``, e.g.
ExchNet's attention parts)."""

from __future__ import annotations

import torch
from torch import nn

from hashlab.models.registry import BACKBONES


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


@BACKBONES.register("small-cnn")
class SmallCNN(nn.Module):
    """A compact CNN for 28×28 images (Fashion-MNIST), fast on a 2-core CPU.

    Two 3×3 conv-BN-ReLU stages with 2×2 max-pooling, an adaptive pool to 7×7 (the identity for
    28×28 inputs, so any input ≥ 4×4 works), then a fully connected layer to ``feature_dim``.
    """

    def __init__(self, in_channels: int = 1, width: int = 32, feature_dim: int = 512) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_conv_bn(in_channels, w),
            nn.MaxPool2d(2),
            *_conv_bn(w, 2 * w),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(7),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(
            nn.Linear(2 * w * 49, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True)
        )
        self.feature_dim = feature_dim
        self.feature_channels = 2 * w

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The 7×7 map of the second conv stage ``[B, 2·width, 7, 7]``."""
        return self.features[:-1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


@BACKBONES.register("resnet18-cifar")
class CifarResNet18(nn.Module):
    """ResNet-18 in the CIFAR layout (3×3 stem, no max-pool), for 32×32 inputs; 512-d features."""

    def __init__(self, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        self.stem = self._stem(in_channels, width)
        layers: list[nn.Module] = []
        cin = width
        for i, blocks in enumerate((2, 2, 2, 2)):
            cout = width * 2**i
            for b in range(blocks):
                layers.append(BasicBlock(cin, cout, stride=2 if (b == 0 and i > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = self.feature_channels = cin

    @staticmethod
    def _stem(in_channels: int, width: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's map ``[B, 8·width, h/8, w/8]``."""
        return self.layers(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.feature_map(x))


@BACKBONES.register("resnet18")
class ResNet18(CifarResNet18):
    """ResNet-18 in the ImageNet layout (7×7 stride-2 stem and a 3×3 stride-2 max-pool), for
    larger images (e.g. 224×224 → a 7×7 last map); 512-d features. Trained from scratch: no
    weights are downloaded."""

    @staticmethod
    def _stem(in_channels: int, width: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
