"""Folding BatchNorm into the convolution before it, for evaluation (``objmtl-test --fuse-conv-bn``).

A BatchNorm in eval mode is an affine map per channel, so ``bn(conv(x))`` equals one convolution
with rescaled weights and a bias (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`). The pairs are
found as ObjectiveMTL (mmcv's ``fuse_conv_bn``) finds them: within each module, a ``BatchNorm2d``
registered right after a ``Conv2d`` with as many output channels is taken to follow it in the forward
pass; the conv is replaced by the fused one and the BatchNorm by ``nn.Identity``. That holds for the
torchvision backbones of the factory (``conv1, bn1``; ``Conv2dNormActivation``); the test checks the
metrics stay the same.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fuse_conv_bn"]


def fuse_conv_bn(module: nn.Module) -> int:
    """Folds every (Conv2d, BatchNorm2d) pair of ``module`` in place (eval mode); returns how many."""
    module.eval()
    fused = 0
    last_name, last_conv = None, None
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d) and isinstance(last_conv, nn.Conv2d) and child.track_running_stats \
                and last_conv.out_channels == child.num_features:
            setattr(module, last_name, fuse_conv_bn_eval(last_conv, child))
            setattr(module, name, nn.Identity())
            fused += 1
            last_name, last_conv = None, None
            continue
        if isinstance(child, nn.Conv2d):
            last_name, last_conv = name, child
        else:
            fused += fuse_conv_bn(child)
            last_name, last_conv = None, None
    return fused
