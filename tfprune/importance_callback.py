"""Earlier home of `ImportancePruning`; the one callback now lives in `tfprune.callbacks`."""

from tfprune.callbacks import ImportancePruning

__all__ = ["ImportancePruning"]
