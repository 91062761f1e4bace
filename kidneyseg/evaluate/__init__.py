"""kidneyseg.evaluate: KiTS19 metrics (pure functions), the kits19/kits23 protocols and per-case reports (CSV/JSON)."""

from .metrics import case_metrics, dice, hd95, kits_dice, surface_dice, volume_ml

__all__ = ["case_metrics", "dice", "hd95", "kits_dice", "surface_dice", "volume_ml"]
