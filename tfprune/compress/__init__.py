"""Compression to a measured latency budget: a NetAdapt-style search over channel groups on a `tfprune.latency` table."""

from tfprune.compress.result import CompressResult, SearchStep
from tfprune.compress.search import compress, parse_latency

__all__ = ["compress", "CompressResult", "SearchStep", "parse_latency"]
