"""Lightning callbacks of objmtl's runs (configured under ``conf/callbacks``)."""

from objmtl.callbacks.ema import EMAWeightAveraging
from objmtl.callbacks.throughput import Throughput

__all__ = ["EMAWeightAveraging", "Throughput"]
