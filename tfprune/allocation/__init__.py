"""Registry of allocators: total sparsity -> per-layer sparsity.

A new allocator is one module that decorates ``fn(problem) -> removals`` with
``@register_allocator("name")`` and is imported here.
"""

from tfprune.allocation import uniform  # noqa: F401  (registers "uniform")
from tfprune.allocation.base import (
    Allocation,
    AllocationProblem,
    allocate_sparsity,
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
    "fill_to_budget",
    "get_allocator",
    "integerize",
    "list_allocators",
    "register_allocator",
]
