"""Feature pyramid over a backbone's C3-C5 with P6/P7 from P5, as RetinaNet / FCOS / ATSS use it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

__all__ = ["FPN"]


class FPN(nn.Module):
    """torchvision's ``FeaturePyramidNetwork`` with two extra levels (``LastLevelP6P7`` on P5's output).

    Args:
        in_channels: Channels of each input map, finest first (e.g. a backbone's C3, C4, C5).
        in_strides: Stride of each input map, each twice the previous one.
        out_channels: Channels of every output level.
        extra_levels: Add P6 and P7 (stride x2 and x4 of the coarsest input) by stride-2 3x3 convs.

    Attributes:
        out_channels: Channels of each output level (all equal).
        strides: Stride of each output level, e.g. ``[8, 16, 32, 64, 128]`` for C3-C5 inputs.
    """

    def __init__(
        self,
        *,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        out_channels: int = 256,
        extra_levels: bool = True,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(in_strides) or not in_channels:
            raise ValueError(f"{len(in_channels)} input channels but {len(in_strides)} strides")
        # in_channels == out_channels makes LastLevelP6P7 start from P5 (the FPN output), not C5.
        extra = LastLevelP6P7(out_channels, out_channels) if extra_levels else None
        self.fpn = FeaturePyramidNetwork([int(c) for c in in_channels], out_channels, extra_blocks=extra)
        strides = [int(s) for s in in_strides]
        if extra_levels:
            strides += [strides[-1] * 2, strides[-1] * 4]
        self.strides: list[int] = strides
        self.out_channels: list[int] = [out_channels] * len(strides)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """Top-down fusion (and the extra levels).

        Args:
            feats: Input maps, finest first, shapes [N, in_channels[i], H / in_strides[i], W / in_strides[i]].

        Returns:
            One map per level, shapes [N, out_channels, ~H / strides[i], ~W / strides[i]].
        """
        named = OrderedDict((f"c{i}", f) for i, f in enumerate(feats))
        return list(self.fpn(named).values())
