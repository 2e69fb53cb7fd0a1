"""Top-down pose estimation: crop geometry, heatmap targets and decoding, the SimpleBaseline model."""

from objmtl.geometry.affine import (
    affine_matrix,
    apply_affine,
    box_to_region,
    from_heatmap,
    invert_affine,
    to_heatmap,
)
from objmtl.geometry.heatmaps import decode_heatmaps, flip_heatmaps, gaussian_targets
from objmtl.models.pose.simple_baseline import SimpleBaseline

__all__ = ["SimpleBaseline", "affine_matrix", "apply_affine", "box_to_region", "decode_heatmaps", "flip_heatmaps",
           "from_heatmap", "gaussian_targets", "invert_affine", "to_heatmap"]
