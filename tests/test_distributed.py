"""Pruning under tf.distribute reaches what one device reaches, for every granularity.

* MirroredStrategy with 2 logical CPUs (one process);
* MultiWorkerMirroredStrategy with 2 worker processes on 127.0.0.1 (TF_CONFIG with ports the test picks),
  for unstructured weights and coupled channel groups.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "scripts"
GRANULARITIES = ["unstructured", "channel"]  # the default suite; block and 2:4 (the same mask machinery) run under make test-all
SLOW_GRANULARITIES = ["block", "2:4"]
MULTIWORKER = ["unstructured", "channel"]


def _results(stdout: str) -> dict:
    out = {}
    for ln in stdout.splitlines():
        if ln.startswith("RESULT "):
            granularity, payload = ln[len("RESULT "):].split(" ", 1)
            out[granularity] = json.loads(payload)
    return out


def _env(**extra: str) -> dict:
    """The scripts import the tfprune of this checkout (not whichever one an editable install points at)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    env["PYTHONPATH"] = os.pathsep.join([str(SCRIPTS.parent.parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def _mirrored(granularities: list[str]) -> dict:
    """Those granularities in one fresh process (logical devices are fixed at TensorFlow start; one start, not several)."""
    proc = subprocess.run([sys.executable, str(SCRIPTS / "mirrored_pruning.py"), ",".join(granularities)], capture_output=True, text=True,
                          timeout=900, env=_env(), cwd=SCRIPTS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _results(proc.stdout)


@pytest.fixture(scope="module")
def results():
    return _mirrored(GRANULARITIES)


@pytest.fixture(scope="module")
def slow_results():
    return _mirrored(SLOW_GRANULARITIES)


def _same_as_one_device(one: dict, other: dict, replicas: int, granularity: str) -> None:
    assert other["replicas"] == replicas and one["replicas"] == 1
    assert one["steps"] == other["steps"] and set(one["steps"]) == {16}  # 2 epochs x 8 global batches: one step per optimizer step
    assert other["zeros"] == one["zeros"] == one["planned"] == other["planned"]
    assert sum(one["zeros"].values()) > 0
    if granularity == "channel":  # channels are chosen by the plan on the dense weights: the very same ones
        assert one["masks"] == other["masks"]


@pytest.mark.slow  # a second TensorFlow start (~25 s): make test-all runs it (it was the default suite's last mirrored test)
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_mirrored_strategy_matches_one_device(results, granularity):
    _same_as_one_device(results[granularity]["one"], results[granularity]["mirrored"], 2, granularity)


@pytest.mark.slow  # a second TensorFlow start (~15 s); the default suite covers unstructured and channel
@pytest.mark.parametrize("granularity", SLOW_GRANULARITIES)
def test_mirrored_strategy_matches_one_device_block_and_n_m(slow_results, granularity):
    _same_as_one_device(slow_results[granularity]["one"], slow_results[granularity]["mirrored"], 2, granularity)


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="module")
def multiworker():
    """Two worker processes of one MultiWorkerMirroredStrategy cluster on 127.0.0.1, and the one-device reference."""
    script = [sys.executable, str(SCRIPTS / "multiworker_pruning.py"), ",".join(MULTIWORKER)]
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = [subprocess.Popen(script, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=SCRIPTS,
                              env=_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})))
             for i in range(2)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=600))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    single = subprocess.run([*script, "--single"], capture_output=True, text=True, timeout=600, env=_env(), cwd=SCRIPTS)
    assert single.returncode == 0, single.stderr[-3000:]
    return _results(single.stdout), [_results(o) for o, _ in outs]


@pytest.mark.slow  # two worker processes (~35 s); MirroredStrategy covers the distributed path in the default suite
@pytest.mark.parametrize("granularity", MULTIWORKER)
def test_multiworker_strategy_matches_one_device(multiworker, granularity):
    one, workers = multiworker
    for w in workers:
        _same_as_one_device(one[granularity], w[granularity], 2, granularity)
    assert workers[0][granularity]["zeros"] == workers[1][granularity]["zeros"]
