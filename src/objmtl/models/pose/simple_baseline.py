"""SimpleBaseline (Xiao et al., ECCV 2018): a backbone's last map, three deconvolutions, K heatmaps."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

__all__ = ["SimpleBaseline"]

_DECONV_PADDING = {4: (1, 0), 3: (1, 1), 2: (0, 0)}  # kernel -> (padding, output_padding) for an exact x2


class SimpleBaseline(nn.Module):
    """Top-down keypoint heatmaps from person crops.

    Args:
        backbone: returns a list of feature maps; the last one (``out_channels[-1]``, ``strides[-1]``)
            feeds the head.
        num_keypoints: K, the heatmap channels (from meta.json).
        deconv_channels: output channels of each x2 deconvolution (3 of them: stride 32 -> 4).
        deconv_kernel: 4, 3 or 2.
        norm_layer: the normalisation after each deconvolution.

    Attributes:
        stride: input pixels per heatmap cell (4 for a stride-32 backbone and 3 deconvolutions).
    """

    kind = "pose"
    takes_crops = True  # top-down: person crops, not whole images (a multi-task model runs it apart)

    def __init__(self, *, backbone: nn.Module, num_keypoints: int, deconv_channels: Sequence[int] = (256, 256, 256),
                 deconv_kernel: int = 4, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        if deconv_kernel not in _DECONV_PADDING:
            raise ValueError(f"deconv_kernel={deconv_kernel}: use 4, 3 or 2")
        if num_keypoints < 1:
            raise ValueError(f"num_keypoints={num_keypoints}: the shards carry no keypoint names")
        self.backbone = backbone
        self.num_keypoints = num_keypoints
        padding, output_padding = _DECONV_PADDING[deconv_kernel]
        layers: list[nn.Module] = []
        channels = backbone.out_channels[-1]
        for out in deconv_channels:
            layers += [nn.ConvTranspose2d(channels, out, deconv_kernel, stride=2, padding=padding,
                                          output_padding=output_padding, bias=False),
                       norm_layer(out), nn.ReLU(inplace=True)]
            channels = out
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(channels, num_keypoints, kernel_size=1)
        self.stride = backbone.strides[-1] // 2 ** len(deconv_channels)
        for m in self.deconv.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)

    def forward(self, crops: Tensor) -> Tensor:
        """crops (Tensor[P, 3, H, W]) -> heatmaps (Tensor[P, K, H / stride, W / stride])."""
        return self.final(self.deconv(self.backbone(crops)[-1]))

    @staticmethod
    def loss(heatmaps: Tensor, targets: Tensor, weights: Tensor) -> dict[str, Tensor]:
        """Keypoint-weighted MSE (SimpleBaseline's: half the mean over persons, keypoints and cells).

        Args:
            heatmaps: (P, K, h, w) predictions.
            targets: (P, K, h, w) Gaussian targets.
            weights: (P, K): 0 for unlabelled keypoints (v = 0) and those off the crop.

        Returns:
            ``{"loss", "loss_heatmap"}`` (the same value).
        """
        if heatmaps.shape != targets.shape:
            raise ValueError(f"heatmaps {tuple(heatmaps.shape)} and targets {tuple(targets.shape)} differ")
        err = (heatmaps.float() - targets.float()) ** 2 * weights.float()[..., None, None]
        loss = 0.5 * err.mean() if err.numel() else heatmaps.sum() * 0.0
        return {"loss": loss, "loss_heatmap": loss.detach()}
