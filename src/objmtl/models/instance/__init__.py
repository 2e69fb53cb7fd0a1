"""Instance segmentation models (task=inst): one box, class and mask per object."""

from objmtl.models.instance.mask_rcnn import InstanceSegmenter, MaskRCNN, paste_masks

__all__ = ["InstanceSegmenter", "MaskRCNN", "paste_masks"]
