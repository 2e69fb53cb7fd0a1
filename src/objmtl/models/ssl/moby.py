"""MoBY (Xie et al., 2021): MoCo v2 queues and BYOL's predictor and momentum teacher, in one symmetric loss.

Names matter for ``objmtl-ckpt wash``: the momentum teacher (with the key queues as its buffers) lives under
``teacher``, the heads under ``projector`` and ``predictor_head``, so washing keeps only ``backbone.*``,
named as in :class:`~objmtl.models.Classifier` and the detectors.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from objmtl.distributed import all_gather_rows
from objmtl.models.ssl.heads import MLPHead

__all__ = ["MoBY", "cosine_momentum"]


def cosine_momentum(base: float, step: int, total: int) -> float:
    """The teacher's momentum at ``step`` of ``total``: ``base`` at the start, rising to 1 along a cosine."""
    progress = min(max(step / max(total, 1), 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


class _Teacher(nn.Module):
    """The momentum copy of backbone and projector, and the queues of its past keys, one per view."""

    def __init__(self, *, backbone: nn.Module, projector: nn.Module, queue_size: int, dim: int) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(backbone)
        self.projector = copy.deepcopy(projector)
        for p in self.parameters():
            p.requires_grad_(False)
        self.register_buffer("queue1", F.normalize(torch.randn(queue_size, dim), dim=1))  # (K, D)
        self.register_buffer("queue2", F.normalize(torch.randn(queue_size, dim), dim=1))  # (K, D)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def keys(self, images: Tensor) -> Tensor:
        """images (Tensor[N, 3, H, W]) -> unit-norm keys (Tensor[N, D])."""
        feats = torch.flatten(F.adaptive_avg_pool2d(self.backbone(images)[-1], 1), 1)
        return F.normalize(self.projector(feats), dim=1)

    @torch.no_grad()
    def enqueue(self, k1: Tensor, k2: Tensor) -> None:
        """Writes the keys of both views (Tensor[N, D] each, all ranks') over the oldest entries."""
        k1, k2 = all_gather_rows(torch.cat([k1, k2], dim=1)).chunk(2, dim=1)
        size = self.queue1.shape[0]
        idx = (self.queue_ptr + torch.arange(min(len(k1), size), device=k1.device)) % size
        self.queue1[idx] = k1[-len(idx):]
        self.queue2[idx] = k2[-len(idx):]
        self.queue_ptr.copy_((self.queue_ptr + len(idx)) % size)


class MoBY(nn.Module):
    """Online encoder (backbone -> pool -> projector -> predictor) against a momentum teacher's keys.

    The loss is InfoNCE of each view's prediction against the teacher's key of the other view (the
    positive) and the queue of that other view's past keys (the negatives), summed over both directions.

    Args:
        backbone: returns a list of feature maps and declares ``out_channels``; its last map is pooled.
        proj_dim: size of the projections (keys and predictions).
        hidden_dim: hidden width of projector and predictor.
        queue_size: keys kept per view as negatives.
        temperature: of the InfoNCE softmax.
        base_momentum: the teacher's momentum at the start of training (it rises to 1, see
            :func:`cosine_momentum`).
    """

    kind = "ssl"

    def __init__(self, *, backbone: nn.Module, proj_dim: int = 256, hidden_dim: int = 4096, queue_size: int = 4096,
                 temperature: float = 0.2, base_momentum: float = 0.99) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = backbone.out_channels[-1]
        self.projector = MLPHead(in_dim=self.feature_dim, hidden_dim=hidden_dim, out_dim=proj_dim)
        self.predictor_head = MLPHead(in_dim=proj_dim, hidden_dim=hidden_dim, out_dim=proj_dim)
        self.teacher = _Teacher(backbone=backbone, projector=self.projector, queue_size=queue_size, dim=proj_dim)
        self.temperature = temperature
        self.base_momentum = base_momentum

    def forward(self, images: Tensor) -> Tensor:
        """images (Tensor[N, 3, H, W]) -> pooled backbone features (Tensor[N, feature_dim])."""
        return torch.flatten(F.adaptive_avg_pool2d(self.backbone(images)[-1], 1), 1)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher <- momentum * teacher + (1 - momentum) * online, for backbone and projector weights;
        normalisation statistics (buffers) are copied."""
        for online, teacher in ((self.backbone, self.teacher.backbone), (self.projector, self.teacher.projector)):
            for p, t in zip(online.parameters(), teacher.parameters(), strict=True):
                t.mul_(momentum).add_(p.detach(), alpha=1.0 - momentum)
            for b, t in zip(online.buffers(), teacher.buffers(), strict=True):
                t.copy_(b)

    def _predict(self, images: Tensor) -> Tensor:
        return F.normalize(self.predictor_head(self.projector(self(images))), dim=1)  # (N, D)

    def _infonce(self, q: Tensor, k: Tensor, queue: Tensor) -> Tensor:
        """q, k (Tensor[N, D]) unit-norm, queue (Tensor[K, D]) -> the mean cross-entropy of the positive."""
        pos = (q * k).sum(1, keepdim=True)  # (N, 1)
        neg = q @ queue.clone().detach().T  # (N, K)
        logits = torch.cat([pos, neg], dim=1) / self.temperature  # (N, 1 + K)
        return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))

    def loss(self, view1: Tensor, view2: Tensor, *, momentum: float) -> dict[str, Tensor]:
        """One MoBY step: updates the teacher by ``momentum``, returns the losses, then enqueues the new keys.

        Args:
            view1, view2 (Tensor[N, 3, H, W]): two augmentations of the same N images.
            momentum: the teacher's momentum for this step.

        Returns:
            ``{"loss", "loss_12", "loss_21"}``: ``loss_12`` predicts view 2's key from view 1.
        """
        q1, q2 = self._predict(view1), self._predict(view2)
        self.update_teacher(momentum)
        k1, k2 = self.teacher.keys(view1), self.teacher.keys(view2)
        loss_12 = self._infonce(q1, k2, self.teacher.queue2)
        loss_21 = self._infonce(q2, k1, self.teacher.queue1)
        self.teacher.enqueue(k1, k2)
        return {"loss": loss_12 + loss_21, "loss_12": loss_12, "loss_21": loss_21}
