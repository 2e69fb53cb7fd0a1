from objmtl.models.backbones import BACKBONE_NAMES, Backbone, build_backbone
from objmtl.models.classifier import Classifier

__all__ = ["BACKBONE_NAMES", "Backbone", "Classifier", "build_backbone"]
