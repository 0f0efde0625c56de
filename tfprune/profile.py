"""Temporary shim: the module is `tfprune.profiling` (a module named ``profile`` is shadowed by the function ``tfprune.profile``).

Only tfprune/__init__.py and tfprune/structured/plan.py still import ``tfprune.profile`` (they are
being rewritten); delete this file once they import ``tfprune.profiling``
(tests/test_layout.py fails on any other importer).
"""

from tfprune.profiling import LayerProfile, Profile, profile

__all__ = ["profile", "Profile", "LayerProfile"]
