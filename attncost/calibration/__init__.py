"""What one GPU achieves: measured rates (`attncost calibrate`) and their tables.

``tables`` reads a calibration file and interpolates between its measured
points; ``measure`` measures them on a CUDA GPU (torch imported only there).
"""
from .tables import (BUNDLED_DIR, Calibration, Curve, attention_key, bundled_calibration,
                     interpolate, load_calibration)

__all__ = ["BUNDLED_DIR", "Calibration", "Curve", "attention_key", "bundled_calibration",
           "interpolate", "load_calibration"]
