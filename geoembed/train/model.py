"""A compact fully convolutional network for per-pixel classification.

:class:`DilatedFCN` is a stack of 3 x 3 convolutions with growing then shrinking dilation
(each followed by batch normalisation and ReLU) and a 1 x 1 classification head. It has no
pooling or striding, so it is exactly translation-equivariant: a tile's interior output
does not depend on where the tile starts, and tiled inference with a halo of
:func:`receptive_radius` pixels reproduces a whole-image run. Output size equals input size
(zero padding at the edges).

This module imports PyTorch at the top: import it only after
``geoembed.errors.require("torch", extra="train", ...)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["DEFAULT_DILATIONS", "DilatedFCN", "receptive_radius"]

#: dilations of the 3 x 3 layers (receptive field 2 * 10 + 1 = 21 px)
DEFAULT_DILATIONS: tuple[int, ...] = (1, 2, 4, 2, 1)


def receptive_radius(dilations: Sequence[int]) -> int:
    """Pixels of context on each side that one output pixel depends on."""
    return int(sum(dilations))


class DilatedFCN(nn.Module):
    """Dilated 3 x 3 conv + BN + ReLU blocks and a 1 x 1 head.

    Parameters
    ----------
    in_bands : int
        Input channels.
    n_classes : int
        Output channels (class scores, logits).
    width : int
        Channels of every hidden layer; also the size of the ``features`` output.
    dilations : sequence of int
        Dilation of each 3 x 3 layer.
    """

    def __init__(
        self,
        in_bands: int,
        n_classes: int,
        *,
        width: int = 32,
        dilations: Sequence[int] = DEFAULT_DILATIONS,
    ) -> None:
        super().__init__()
        self.in_bands = int(in_bands)
        self.n_classes = int(n_classes)
        self.width = int(width)
        self.dilations = tuple(int(d) for d in dilations)
        layers: list[nn.Module] = []
        channels = self.in_bands
        for d in self.dilations:
            layers += [
                nn.Conv2d(channels, self.width, 3, padding=d, dilation=d, bias=False),
                nn.BatchNorm2d(self.width),
                nn.ReLU(),
            ]
            channels = self.width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(self.width, self.n_classes, 1)

    @property
    def receptive_radius(self) -> int:
        """Context pixels on each side of an output pixel."""
        return receptive_radius(self.dilations)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last hidden layer, ``(n, width, h, w)``."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (logits), ``(n, n_classes, h, w)``."""
        return self.head(self.body(x))
