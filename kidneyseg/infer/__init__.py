"""kidneyseg.infer: cascade inference (stage 1 -> ROI -> stage 2), sliding window, post-processing."""

from .postprocess import STRATEGIES, postprocess
from .sliding_window import sliding_window_predict

__all__ = ["STRATEGIES", "postprocess", "sliding_window_predict"]
