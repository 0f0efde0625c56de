"""Measured latency: per-layer lookup tables of LiteRT timings, the latency of a channel-pruned model predicted from them, and
`compress`, the search for the most accurate channel-pruned model under a latency budget."""

from tfprune.latency.cost import LatencyCost
from tfprune.latency.device import export_probes, import_probe_logs, parse_benchmark_log
from tfprune.latency.macs import macs_table
from tfprune.latency.measure import build_table, measure_model_ms, time_tflite
from tfprune.latency.result import CompressResult, SearchStep
from tfprune.latency.search import compress, parse_latency, parse_size
from tfprune.latency.table import LatencyTable, LayerTiming

__all__ = ["LatencyTable", "LayerTiming", "LatencyCost", "build_table", "macs_table", "measure_model_ms", "time_tflite", "export_probes",
           "import_probe_logs", "parse_benchmark_log", "compress", "parse_latency", "parse_size", "CompressResult", "SearchStep"]
