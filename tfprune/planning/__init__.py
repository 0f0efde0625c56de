"""Stage 3, planning: one total (weights, MACs or parameters) -> how many units each owner loses.

`planner` holds `plan` (importance -> allocation -> whole units of the granularity; channel
groups through `tfprune.structured.plan`), `plans` the one `Plan` it returns.
"""

from tfprune.planning.planner import (
    DEFAULT_ALLOCATION,
    DEFAULT_CHANNEL_ALLOCATION,
    DEFAULT_CHANNEL_IMPORTANCE,
    DEFAULT_IMPORTANCE,
    default_methods,
    output_layer_names,
    params_to_sparsity,
    plan,
    round_to_units,
)
from tfprune.planning.plans import GroupPlan, Plan

__all__ = [
    "DEFAULT_ALLOCATION",
    "DEFAULT_CHANNEL_ALLOCATION",
    "DEFAULT_CHANNEL_IMPORTANCE",
    "DEFAULT_IMPORTANCE",
    "GroupPlan",
    "default_methods",
    "Plan",
    "output_layer_names",
    "params_to_sparsity",
    "plan",
    "round_to_units",
]
