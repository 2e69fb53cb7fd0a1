from objmtl.models.ssl.heads import MLPHead
from objmtl.models.ssl.moby import MoBY, cosine_momentum

__all__ = ["MLPHead", "MoBY", "cosine_momentum"]
