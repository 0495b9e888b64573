"""Tiny models with known answers for the explain/ tests (not a test module: imported by them).

`TinyCNN` (random, seeded, in-place ReLUs like FashionCNN) and `RegionNet`, whose score depends only
on one 8x8 region, so a faithful map must put that region first.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

REGION = (slice(3, 11), slice(16, 24))          # 8x8, off-centre: a transposed map would miss it


class TinyCNN(nn.Module):
    """A 10-class CNN small enough for hundreds of calls; ReLUs in place, as in FashionCNN."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.last_conv = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(inplace=True))   # (B, 8, 14, 14)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.last_conv(self.stem(x)))


class RegionNet(nn.Module):
    """Class 0's score grows with the brightness inside REGION and ignores every other pixel.

    Positive conv weights and a fixed mask after the first conv: logits = (s, -s, 0) with
    s = mean of the last conv's activations, which only pixels in REGION (dilated by one pixel,
    the first conv's reach) can change.
    """

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.last_conv = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4, 3, bias=False)
        with torch.no_grad():
            self.conv1.weight.abs_().mul_(0.5)
            self.last_conv[0].weight.abs_().mul_(0.5)
            self.fc.weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4, [0.0] * 4]) * 20)
        mask = torch.zeros(1, 1, 28, 28)
        mask[0, 0, REGION[0], REGION[1]] = 1
        self.register_buffer("mask", mask)

    def forward(self, x):
        return self.fc(self.pool(self.last_conv(torch.relu(self.conv1(x)) * self.mask)))


def region_mask(dilate: int = 0) -> np.ndarray:
    m = np.zeros((28, 28), bool)
    m[REGION[0].start - dilate:REGION[0].stop + dilate, REGION[1].start - dilate:REGION[1].stop + dilate] = True
    return m
