"""Stand-ins used by the config tests."""

from torch import nn


class FakeDetector(nn.Module):
    kind = "det"
