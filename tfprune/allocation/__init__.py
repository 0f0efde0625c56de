"""Registry of allocators: total sparsity -> per-layer sparsity.

``uniform``, ``global``, ``global_ratio``, ``lamp``, ``erk``, ``importance``,
``importance_fansum``, ``output_error``.
Allocators that also plan channel groups register their group form with
``@register_group_keys("name")`` (``uniform``, ``global``, ``global_ratio``,
``lamp``, ``importance``). A new allocator is one module that decorates ``fn(problem) -> removals`` with
``@register_allocator("name")`` and is imported here.
"""

from tfprune.allocation import density_rules, global_ratio, magnitude_rules, output_error, uniform  # noqa: F401  (register allocators)
from tfprune.allocation.base import (
    Allocation,
    AllocationProblem,
    allocate_sparsity,
    allocator_needs_scores,
    fill_to_budget,
    get_allocator,
    group_keys,
    integerize,
    list_allocators,
    list_group_allocators,
    register_allocator,
    register_group_keys,
)

__all__ = [
    "Allocation",
    "AllocationProblem",
    "allocate_sparsity",
    "allocator_needs_scores",
    "fill_to_budget",
    "get_allocator",
    "group_keys",
    "integerize",
    "list_allocators",
    "list_group_allocators",
    "register_allocator",
    "register_group_keys",
]
