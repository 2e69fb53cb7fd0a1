"""objmtl: Lightning + Hydra training of vision models from WebDataset shards."""

import os as _os

# albumentations checks PyPI for a newer version at import; never do that from a training job.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
