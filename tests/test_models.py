from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hashlab.config import ModelConfig
from hashlab.losses import LOSSES, quantization_penalty
from hashlab.models import BACKBONES, build_model


@pytest.mark.parametrize("size", [8, 28, 32])
def test_small_cnn_accepts_small_images(size):
    model = build_model(ModelConfig(dim=24, backbone_args={"width": 4, "feature_dim": 16}), 1)
    out = model(torch.randn(3, 1, size, size))
    assert out.shape == (3, 24) and out.abs().max() < 1  # tanh code


def test_resnet18_cifar_shapes():
    net = BACKBONES.build("resnet18_cifar", in_channels=3, width=8)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, net.feature_dim) == (2, 64)


def test_encode_float_and_packed_bits():
    torch.manual_seed(0)
    model = build_model(ModelConfig(dim=13, backbone_args={"width": 4, "feature_dim": 16}), 1)
    x = torch.randn(5, 1, 28, 28)
    floats = model.encode(x, "float")
    bits = model.encode(x, "binary")
    assert floats.dtype == np.float32 and floats.shape == (5, 13)
    assert bits.dtype == np.uint8 and bits.shape == (5, 2)
    # bit i is (tanh code > 0), packed little-endian per byte (FAISS's order)
    expected = np.packbits(floats > 0, axis=1, bitorder="little")
    np.testing.assert_array_equal(bits, expected)
    assert model.training  # encode restores train mode


def test_embedding_head_has_no_bits():
    model = build_model(ModelConfig(head="embedding", dim=8,
                                    backbone_args={"width": 4, "feature_dim": 16}), 1)
    with pytest.raises(ValueError, match="embedding head"):
        model.encode(torch.randn(2, 1, 28, 28), "binary")


def test_softmax_loss_matches_closed_form():
    torch.manual_seed(0)
    loss = LOSSES.build("softmax", num_classes=4, dim=6)
    x, y = torch.randn(10, 6), torch.randint(0, 4, (10,))
    logits = (x @ loss.classifier.weight.T + loss.classifier.bias).detach().double().numpy()
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -logp[np.arange(10), y.numpy()].mean()
    assert loss(x, y).item() == pytest.approx(expected, rel=1e-5)


def test_hash_ce_adds_quantization_penalty():
    torch.manual_seed(0)
    hash_loss = LOSSES.build("hash_ce", num_classes=3, dim=5, quantization_weight=0.5)
    u, y = torch.tanh(torch.randn(7, 5)), torch.randint(0, 3, (7,))
    ce = F.cross_entropy(hash_loss.classifier(u), y)
    penalty = ((u.abs() - 1) ** 2).mean()
    assert hash_loss(u, y).item() == pytest.approx((ce + 0.5 * penalty).item(), rel=1e-6)
    assert quantization_penalty(torch.tensor([[1.0, -1.0]])).item() == 0.0


def test_loss_input_validation():
    loss = LOSSES.build("softmax", num_classes=3, dim=4)
    with pytest.raises(ValueError, match="shape"):
        loss(torch.randn(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        loss(torch.randn(2, 4), torch.tensor([0, 3]))
