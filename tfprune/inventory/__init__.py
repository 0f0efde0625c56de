"""Stage 1, inventory: what a model holds, read without changing it.

`layers` (`prunable_layers`: the prunable kernels and why others are skipped), `profiling`
(`profile`: parameters and MACs per layer) and `config_graph` (the one reader of a model's
layer graph from ``get_config()``, shared by `tfprune.structured` and `tfprune.shallow`).
"""
