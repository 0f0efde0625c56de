"""Pruning under tf.distribute.MirroredStrategy (2 logical CPUs) reaches what one device reaches, for every granularity."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "mirrored_pruning.py"


GRANULARITIES = ["unstructured", "block", "channel", "2:4"]


@pytest.fixture(scope="module")
def results():
    """All granularities in one fresh process (logical devices are fixed at TensorFlow start; one start, not four)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(SCRIPT), ",".join(GRANULARITIES)], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = {}
    for ln in proc.stdout.splitlines():
        if ln.startswith("RESULT "):
            granularity, payload = ln[len("RESULT "):].split(" ", 1)
            out[granularity] = json.loads(payload)
    return out


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_mirrored_strategy_matches_one_device(results, granularity):
    res = results[granularity]
    one, mirrored = res["one"], res["mirrored"]
    assert mirrored["replicas"] == 2 and one["replicas"] == 1
    assert one["steps"] == mirrored["steps"] == [16] * 4  # 2 epochs x 8 global batches: one step per optimizer step
    assert mirrored["zeros"] == one["zeros"] == one["planned"] == mirrored["planned"]
    assert sum(one["zeros"].values()) > 0
