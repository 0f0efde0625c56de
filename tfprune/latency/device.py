"""Latency tables measured on another device (a phone): export the probe models, time them there with ``benchmark_model``, import the logs.

1. ``export_probes(model, "probes/")`` writes, for the model's layers and the
   channel counts they can take, the same one-layer ``.tflite`` files the host
   table times (`tfprune.latency.measure`), an almost empty model, the dense
   model and uniformly channel-pruned variants of it (to calibrate the
   remainder), a ``manifest.json`` and ``run_on_device.sh``.
2. On the device, ``run_on_device.sh`` runs LiteRT's ``benchmark_model`` on
   every file and writes one log per file into ``logs/`` (for an Android
   phone: ``adb push probes /data/local/tmp/``, run it with ``adb shell``,
   ``adb pull`` the logs; docs/guide/latency.md has the commands).
3. ``import_probe_logs("probes/")`` reads the average inference time of each
   log (``Inference timings in us: ... Inference (avg): 1234.5``) and builds
   the `LatencyTable` (layer times less the empty model's, the remainder
   calibrated on the whole-model variants), which `tfprune.compress` and
   `tfprune.plan(latency=...)` take.

The manifest holds everything the import needs (grids, layer names, each
variant's channel counts and element-wise share), so the import runs without
the model.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfprune.latency.cost import LatencyCost
from tfprune.latency.measure import calibration_variants, empty_model, one_layer_model, probe_plan, tflite_bytes
from tfprune.latency.table import LatencyTable, LayerTiming, calibrate_remainder, monotone
from tfprune.validation import check_int, fraction

__all__ = ["export_probes", "import_probe_logs", "parse_benchmark_log", "PROBES_FORMAT"]

PROBES_FORMAT = "tfprune-latency-probes/1"
_AVG = re.compile(r"Inference \(avg\):\s*([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)")
_COUNT_AVG = re.compile(r"count=\d+.*?\bavg=([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)")

_SCRIPT = """#!/bin/sh
# Times every probe with LiteRT's benchmark_model; one log per file in logs/.
# Usage (on the device, in this folder): sh run_on_device.sh /path/to/benchmark_model
BENCH=${{1:-./benchmark_model}}
mkdir -p logs
for f in probes/*.tflite; do
  name=$(basename "$f" .tflite)
  "$BENCH" --graph="$f" --num_threads={threads} --num_runs={runs} --warmup_runs=5 > "logs/$name.txt" 2>&1
done
echo "done: $(ls logs | wc -l) logs"
"""


def parse_benchmark_log(text: str) -> float:
    """Milliseconds per invocation from a ``benchmark_model`` log: ``Inference (avg)`` in microseconds (or the last ``count=... avg=``)."""
    found = _AVG.findall(text)
    if not found:
        found = _COUNT_AVG.findall(text)
    if not found:
        raise ValueError("no 'Inference (avg): <microseconds>' (or 'count=... avg=...') line in the log. Fix: give the full output of "
                         "benchmark_model --graph=FILE (stdout and stderr)")
    return float(found[-1]) / 1000.0


def _write(path: str, data: bytes | str) -> None:
    from tfprune.files import atomic_write

    with atomic_write(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def export_probes(model: Any, folder: str, *, points: int = 4, channel_step: int = 8, calibrate: Sequence[float] = (0.3, 0.6),
                  calibrate_weights: float | None = 0.5, threads: int = 1, runs: int = 50) -> str:
    """Write the probe models of ``model``, their manifest and ``run_on_device.sh`` into ``folder``; returns the manifest's path.

    ``points``, ``channel_step``, ``calibrate``, ``calibrate_weights``: as `tfprune.latency.build_table`; ``threads``, ``runs``:
    ``benchmark_model``'s ``--num_threads`` and ``--num_runs`` in the script.
    """
    from tfprune._keras import is_keras3_object

    if is_keras3_object(model):
        from tfprune.keras3.convert import to_tf_keras

        model = to_tf_keras(model)
    points = check_int(points, "points", 1)
    channel_step = check_int(channel_step, "channel_step", 1)
    threads = check_int(threads, "threads", 1)
    runs = check_int(runs, "runs", 1)
    calibrate = [fraction(f, "calibrate[i] (a fraction of MACs removed)") for f in calibrate]
    if calibrate_weights is not None:
        calibrate_weights = fraction(calibrate_weights, "calibrate_weights (a fraction of parameters removed)")
    cg, layers, todo = probe_plan(model, points, channel_step)
    os.makedirs(os.path.join(folder, "probes"), exist_ok=True)
    _write(os.path.join(folder, "probes", "empty.tflite"), tflite_bytes(empty_model()))
    signatures = {}
    for i, (sig, (layer, in_shape, g_in, g_out, step_in, step_out)) in enumerate(todo.items()):
        files = []
        for a in g_in:
            row = []
            for b in g_out:
                name = f"probes/s{i:03d}_{int(a)}x{int(b)}.tflite"
                _write(os.path.join(folder, name), tflite_bytes(one_layer_model(layer, in_shape, int(a), int(b))))
                row.append(name)
            files.append(row)
        signatures[sig] = {"description": f"{type(layer).__name__} like {layer.name!r}, input {in_shape}", "grid_in": g_in.tolist(),
                           "grid_out": g_out.tolist(), "step_in": bool(step_in), "step_out": bool(step_out), "files": files}
    table = LatencyTable(timings={s: LayerTiming(v["grid_in"], v["grid_out"], np.zeros((len(v["grid_in"]), len(v["grid_out"]))), "",
                                                 v["step_in"], v["step_out"]) for s, v in signatures.items()}, layers=layers)
    cost = LatencyCost(cg, table)
    variants = {}
    for j, (key, (m, removed)) in enumerate(calibration_variants(model, cg, cost, calibrate, calibrate_weights).items()):
        name = f"probes/whole_{j}.tflite"
        _write(os.path.join(folder, name), tflite_bytes(m))
        variants[key] = {"file": name, "channels": {n: list(c) for n, c in cost.channels(removed).items()}, "share": cost.share(removed),
                        "weight_share": cost.weight_share(removed)}
    manifest = {"format": PROBES_FORMAT, "model": model.name, "threads": threads, "points": points, "channel_step": channel_step,
                "empty": "probes/empty.tflite",
                "layers": {n: list(v) for n, v in layers.items()}, "signatures": signatures, "variants": variants,
                "elementwise_elements": cost.elementwise_total, "weight_elements": cost.weight_total}
    path = os.path.join(folder, "manifest.json")
    _write(path, json.dumps(manifest, indent=1))
    _write(os.path.join(folder, "run_on_device.sh"), _SCRIPT.format(threads=threads, runs=runs))
    return path


def import_probe_logs(folder: str, logs: str | None = None, device: str = "device") -> LatencyTable:
    """A `LatencyTable` from the ``benchmark_model`` logs of the probes `export_probes` wrote into ``folder``.

    ``logs``: the folder of logs (default ``folder/logs``), one ``<probe name>.txt`` per ``.tflite``; ``device``: a name for the table.
    """
    try:
        with open(os.path.join(folder, "manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{folder!r} has no readable manifest.json ({err}). Fix: pass the folder tfprune.latency.export_probes wrote") from None
    if manifest.get("format") != PROBES_FORMAT:
        raise ValueError(f"{folder!r}/manifest.json is not a tfprune probe manifest (format {manifest.get('format')!r}). Fix: pass the "
                         "folder tfprune.latency.export_probes wrote")
    logs = logs or os.path.join(folder, "logs")

    def ms(probe: str) -> float:
        path = os.path.join(logs, os.path.splitext(os.path.basename(probe))[0] + ".txt")
        try:
            with open(path, errors="replace") as f:
                text = f.read()
        except OSError:
            raise ValueError(f"no log for {probe!r} (expected {path!r}). Fix: run run_on_device.sh on the device and copy its logs/ "
                             "folder back") from None
        try:
            return parse_benchmark_log(text)
        except ValueError as err:
            raise ValueError(f"{path!r}: {err}") from None

    base = ms(manifest["empty"])
    timings = {}
    for sig, v in manifest["signatures"].items():
        grid = monotone([[max(ms(f) - base, 0.0) for f in row] for row in v["files"]])
        timings[sig] = LayerTiming(np.asarray(v["grid_in"]), np.asarray(v["grid_out"]), grid, v.get("description", ""),
                                   bool(v.get("step_in", False)), bool(v.get("step_out", False)))
    layers = {n: (str(v[0]), int(v[1]), int(v[2])) for n, v in manifest["layers"].items()}
    table = LatencyTable(timings=timings, layers=layers, device=device, threads=int(manifest.get("threads", 1)), runtime="benchmark_model",
                         model=str(manifest.get("model", "")), elementwise_elements=float(manifest.get("elementwise_elements", 0.0)),
                         weight_elements=float(manifest.get("weight_elements", 0.0)),
                         notes=[f"imported from benchmark_model logs in {logs!r}; layer times less the empty model's ({base:.4f} ms)"])
    variants = manifest.get("variants", {})
    measured = [ms(v["file"]) for v in variants.values()]
    sums = [sum(table.layer_ms(n, *c) for n, c in v["channels"].items()) for v in variants.values()]
    shares = [float(v["share"]) for v in variants.values()]
    weight_shares = [float(v["weight_share"]) for v in variants.values()] if all("weight_share" in v for v in variants.values()) else None
    table.base_ms, table.elementwise_ms, table.weights_ms = calibrate_remainder(measured, sums, shares, weight_shares)
    for (key, v), m, s in zip(variants.items(), measured, sums):
        predicted = s + table.remainder(v["share"], v.get("weight_share", 1.0))
        table.notes.append(f"calibration {key}: measured {m:.4f} ms, predicted {predicted:.4f} ms")
    return table
