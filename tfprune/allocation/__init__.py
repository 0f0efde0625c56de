"""Registry of allocators: total sparsity -> per-layer sparsity.

``uniform``, ``global``, ``global_ratio``, ``lamp``, ``erk``, ``importance``,
``importance_fansum``, ``output_error``.
A new allocator is one module that decorates ``fn(problem) -> removals`` with
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
    integerize,
    list_allocators,
    register_allocator,
)

__all__ = [
    "Allocation",
    "AllocationProblem",
    "allocate_sparsity",
    "allocator_needs_scores",
    "fill_to_budget",
    "get_allocator",
    "integerize",
    "list_allocators",
    "register_allocator",
]
