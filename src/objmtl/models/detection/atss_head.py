"""The ATSS head (Zhang et al., CVPR 2020): shared classification and regression towers, with centerness."""

from __future__ import annotations

from objmtl.models.detection.dense_head import DenseHead, Scale

__all__ = ["ATSSHead", "Scale"]


class ATSSHead(DenseHead):
    """Towers shared across levels; one anchor per location (a :class:`DenseHead` with centerness).

    The classification tower ends in ``num_classes`` sigmoid logits, the regression tower in 4 box deltas
    (multiplied by a learnable per-level :class:`Scale`) and 1 centerness logit. FCOS uses the same head,
    its 4 outputs being distances to the box sides.

    Args:
        in_channels: Channels of every input level (the neck's output).
        num_classes: Foreground classes (no background logit: sigmoid classification).
        num_levels: Pyramid levels (one Scale each).
        num_convs: 3x3 conv + GroupNorm + ReLU blocks per tower.
        gn_groups: GroupNorm groups.
        prior_prob: Initial foreground probability of every logit (the classification bias).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        num_levels: int = 5,
        num_convs: int = 4,
        gn_groups: int = 32,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__(in_channels=in_channels, num_classes=num_classes, num_anchors=1, num_levels=num_levels,
                         num_convs=num_convs, gn_groups=gn_groups, prior_prob=prior_prob, centerness=True,
                         scales=True)
