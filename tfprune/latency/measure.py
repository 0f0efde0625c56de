"""Build a `LatencyTable` for a model by timing its own layers with ai-edge-litert on this machine (``device="host"``).

For every layer tfprune times (Conv1D/2D, DepthwiseConv2D, SeparableConv2D,
Conv2DTranspose, Dense) a one-layer model with the layer's configuration and
input size is converted to float TFLite at each point of a grid of input and
output channel counts and timed at batch 1 (only the sides whose channels a
prunable group can remove get a grid): output channels (a depthwise layer's
channels) at every multiple of ``channel_step`` (`tfprune.latency.table.step_grid`:
the kernels compute them in tiles, so their cost grows in steps), input
channels at ``points`` counts (`channel_grid`: their cost grows linearly),
interleaved with the others (median of blocks of invocations), less the time
of an almost empty model (the interpreter's own cost per invocation). Layers
that compute the same thing share a signature and are timed once; timings are
cached per signature, device and thread count in
``~/.cache/tfprune/latency/`` (``$TFPRUNE_CACHE`` moves it), so a second model
with the same layers costs nothing.

The remainder (element-wise layers, the interpreter's overhead, the weights'
memory traffic) is calibrated on whole-model timings of the dense model, of
``calibrate`` uniformly channel-pruned copies and of one globally pruned copy
that keeps about half the weights (``calibrate_weights``;
`tfprune.latency.table.calibrate_remainder`); the notes of the table give each
variant's measured and predicted milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tfprune._keras import keras
from tfprune.latency.cost import LatencyCost, timed_layer_keys
from tfprune.latency.table import LatencyTable, LayerTiming, calibrate_remainder, channel_grid, monotone, speed_factor, step_grid
from tfprune.structured.graph import ChannelGraph, channel_graph
from tfprune.validation import check_int, fraction

__all__ = ["build_table", "time_tflite", "tflite_bytes", "TIMED_LAYERS", "measure_model_ms", "calibration_variants", "fit_remainder", "probe_plan",
           "one_layer_model", "empty_model"]

L = keras.layers
#: the layer classes a table times one by one (everything else is the remainder)
TIMED_LAYERS = (L.Conv1D, L.Conv2D, L.DepthwiseConv2D, L.SeparableConv2D, L.Conv2DTranspose, L.Dense)
_DROP = ("name", "trainable", "dtype", "kernel_initializer", "bias_initializer", "kernel_regularizer", "bias_regularizer",
         "activity_regularizer", "kernel_constraint", "bias_constraint", "depthwise_initializer", "pointwise_initializer",
         "depthwise_regularizer", "pointwise_regularizer", "depthwise_constraint", "pointwise_constraint", "filters", "units")


def tflite_bytes(model: Any) -> bytes:
    """Float TFLite of a plain tf-keras model (builtin ops)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def time_tflite(contents: Mapping[Any, bytes], threads: int = 1, rounds: int = 10, block: int = 10, warmup: int = 3) -> tuple[dict[Any, float], str]:
    """Median milliseconds per batch-1 invocation of each .tflite, timed in interleaved blocks; and the runtime used.

    Every model runs ``rounds`` blocks of ``block`` invocations, the models
    taking turns, so a change of machine load touches all of them alike.
    """
    from tfprune.export.runtime import make_interpreter

    rng = np.random.default_rng(0)
    interps, runtimes = {}, set()
    for key, content in contents.items():
        interp, runtime = make_interpreter(content, num_threads=threads)
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], rng.standard_normal(d["shape"]).astype(d["dtype"]))
        for _ in range(warmup):
            interp.invoke()
        interps[key] = interp
        runtimes.add(runtime)
    times: dict[Any, list[float]] = {k: [] for k in contents}
    clock = time.perf_counter
    for _ in range(rounds):
        for key, interp in interps.items():
            for _ in range(block):
                t = clock()
                interp.invoke()
                times[key].append(clock() - t)
    return {k: float(np.median(v) * 1000.0) for k, v in times.items()}, ", ".join(sorted(runtimes))


def measure_model_ms(models: Mapping[Any, Any], threads: int = 1, rounds: int = 20, block: int = 10) -> dict[Any, float]:
    """Median milliseconds per batch-1 invocation of each tf-keras model as float TFLite (interleaved)."""
    return time_tflite({k: tflite_bytes(m) for k, m in models.items()}, threads, rounds, block)[0]


# ------------------------------------------------------------------ layers
def _input_shape(layer: Any) -> tuple:
    shape = tuple(layer.input.shape)[1:]
    if any(d is None for d in shape):
        raise ValueError(f"layer {layer.name!r} has input shape {shape} with an unknown size; a latency table times layers at the "
                         "model's input size. Fix: build the model with a fixed input, keras.Input(shape=(H, W, C))")
    return tuple(int(d) for d in shape)


def _signature(layer: Any, in_shape: tuple, n_out: int) -> str:
    config = {k: v for k, v in layer.get_config().items() if k not in _DROP}
    return json.dumps({"class": type(layer).__name__, "config": config, "input": list(in_shape), "out": int(n_out)}, sort_keys=True,
                      default=str)


def one_layer_model(layer: Any, in_shape: tuple, n_in: int, n_out: int) -> Any:
    config = {k: v for k, v in layer.get_config().items() if k not in ("name", "trainable")}
    if "filters" in config:
        config["filters"] = int(n_out)
    if "units" in config:
        config["units"] = int(n_out)
    inp = keras.Input(shape=in_shape[:-1] + (int(n_in),))
    return keras.Model(inp, type(layer).from_config(config)(inp))


def _grid(n: int, points: int, groups: int, prunable: bool, step: int = 0) -> np.ndarray:
    """The counts a side is timed at: ``[n]`` when no group can shrink it; every multiple of ``step`` (``step > 0``) or
    ``points`` counts (``step == 0``), per convolution group."""
    if not prunable:
        return np.asarray([n], dtype=np.int64)
    per_group = n // groups
    grid = step_grid(per_group, step) if step else channel_grid(per_group, points)
    return grid * groups


def _cache_file(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    import ai_edge_litert

    tag = hashlib.sha256(f"{cpu}|{getattr(ai_edge_litert, '__version__', '')}".encode()).hexdigest()[:12]
    root = os.environ.get("TFPRUNE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tfprune")
    return os.path.join(root, "latency", f"host-{tag}-threads{threads}-v2.json")


def _read_cache(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _write_cache(path: str, data: dict) -> None:
    from tfprune.files import atomic_write

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_write(path, "w") as f:
        json.dump(data, f)


def _removed_by_plan(cost: LatencyCost, cg: ChannelGraph, channels: Mapping[str, Sequence[int]]) -> np.ndarray:
    labels = [int(cg.group(g).labels[c]) for g, cs in channels.items() for c in cs]
    return cost.removed_mask(np.asarray(labels, dtype=np.int64)) if labels else np.zeros(cost.all_labels.size, bool)


def empty_model() -> Any:
    """An almost empty model (one ReLU on one number): its time is the interpreter's own cost per invocation."""
    inp = keras.Input((1,))
    return keras.Model(inp, L.ReLU()(inp))


def probe_plan(model: Any, points: int, channel_step: int = 8) -> tuple[ChannelGraph, dict[str, tuple[str, int, int]], dict[str, tuple]]:
    """The channel graph; layer -> (signature, input channels, output channels); signature -> (a layer, input shape, grid in,
    grid out, step_in, step_out): the stepped side (outputs; a depthwise layer's channels) on multiples of ``channel_step``."""
    cg = channel_graph(model)
    prunable_keys = {k for g in cg.prunable for k in g.tensors}
    layers: dict[str, tuple[str, int, int]] = {}
    todo: dict[str, tuple[Any, tuple, np.ndarray, np.ndarray]] = {}
    for name in cg.nodes:
        layer = cg.flat.get_layer(name)
        if not isinstance(layer, TIMED_LAYERS):
            continue
        in_shape = _input_shape(layer)
        n_in, n_out = in_shape[-1], int(layer.output.shape[-1])
        sig = _signature(layer, in_shape, n_out)
        kin, kout = timed_layer_keys(cg, name)
        groups = int(getattr(layer, "groups", 1) or 1)
        depthwise = isinstance(layer, L.DepthwiseConv2D)
        g_in = _grid(n_in, points, groups, kin in prunable_keys, channel_step if depthwise else 0)
        g_out = np.asarray([n_out], np.int64) if depthwise else _grid(n_out, points, groups, kout in prunable_keys, channel_step)
        layers[name] = (sig, n_in, n_out)
        if sig in todo:  # the union of the grids of the layers that share the signature
            _, _, a, b, _, _ = todo[sig]
            todo[sig] = (layer, in_shape, np.union1d(a, g_in), np.union1d(b, g_out), depthwise, not depthwise)
        else:
            todo[sig] = (layer, in_shape, g_in, g_out, depthwise, not depthwise)
    if not layers:
        raise ValueError(f"model {model.name!r} has no layer tfprune times (Conv, DepthwiseConv2D, SeparableConv2D, Dense)")
    return cg, layers, todo


def calibration_variants(model: Any, cg: ChannelGraph, cost: LatencyCost, calibrate: Sequence[float],
                         calibrate_weights: float | None = None) -> dict[str, tuple[Any, np.ndarray]]:
    """``{"dense": (model, nothing removed), "uniform macs=f": (smaller model, removed id classes)}`` for each ``f > 0``, and
    ``"global params=p"`` (global channel pruning removing ``p`` of the parameters) when ``calibrate_weights = p > 0``."""
    from tfprune.structured.plan import plan_and_shrink

    variants = {"dense": (model, np.zeros(cost.all_labels.size, bool))}
    for f in calibrate:
        if f > 0:
            plan, small, _ = plan_and_shrink(model, macs=f, allocation="uniform")
            variants[f"uniform macs={f:g}"] = (small, _removed_by_plan(cost, cg, plan.channels))
    if calibrate_weights:
        plan, small, _ = plan_and_shrink(model, params=calibrate_weights, allocation="global")
        variants[f"global params={calibrate_weights:g}"] = (small, _removed_by_plan(cost, cg, plan.channels))
    return variants


def fit_remainder(table: LatencyTable, cost: LatencyCost, measured: Mapping[str, tuple[float, np.ndarray]]) -> None:
    """Set the table's remainder from whole-model timings: ``{variant: (measured ms, removed id classes)}``; notes each variant."""
    sums = [sum(table.layer_ms(n, *c) for n, c in cost.channels(r).items()) for _, r in measured.values()]
    shares = [cost.share(r) for _, r in measured.values()]
    weight_shares = [cost.weight_share(r) for _, r in measured.values()]
    table.base_ms, table.elementwise_ms, table.weights_ms = calibrate_remainder([m for m, _ in measured.values()], sums, shares,
                                                                                weight_shares)
    for key, (m, removed) in measured.items():
        table.notes.append(f"calibration {key}: measured {m:.4f} ms, predicted {cost.estimate(removed):.4f} ms")


# speed factors (now / cache) build_table applies to cached rows; outside them the rows are left as cached and the table's
# notes say so (a tiny model's layers, near the clock's resolution and timed with few rounds, gave a factor far below 0.5)
TRUSTED_SPEED_FACTORS = (0.5, 2.0)


def _rescale_cached(timings: dict[str, LayerTiming], cached: Mapping[str, tuple], empty: Any, threads: int, rounds: int,
                    block: int) -> tuple[float, bool, str]:
    """Time each cached signature's layer now at its own channel counts, scale the cached grids by the speed factor (in
    place) when it is within `TRUSTED_SPEED_FACTORS`; the factor, whether it was applied, and the runtime used."""
    contents = {"empty": tflite_bytes(empty)}
    points = {}
    for sig, (layer, in_shape, *_rest) in cached.items():
        points[sig] = (int(in_shape[-1]), int(layer.output.shape[-1]))
        contents[sig] = tflite_bytes(one_layer_model(layer, in_shape, *points[sig]))
    ms, runtime = time_tflite(contents, threads, rounds, block)
    base = ms.pop("empty")
    factor = speed_factor([max(ms[s] - base, 0.0) for s in cached], [timings[s].at(*points[s]) for s in cached])
    if not TRUSTED_SPEED_FACTORS[0] <= factor <= TRUSTED_SPEED_FACTORS[1]:
        return factor, False, runtime  # not a change of speed: layers too small for the clock, or a cache of another setting
    for sig in cached:
        t = timings[sig]
        timings[sig] = LayerTiming(t.grid_in, t.grid_out, t.ms * factor, t.description, t.step_in, t.step_out)
    return factor, True, runtime


def build_table(
    model: Any,
    *,
    threads: int = 1,
    points: int = 4,
    channel_step: int = 8,
    rounds: int = 10,
    block: int = 10,
    calibrate: Sequence[float] = (0.3, 0.6),
    calibrate_weights: float | None = 0.5,
    cache: bool | str = True,
    recheck_cache: bool = True,
    progress: Callable[[str], None] | None = None,
) -> LatencyTable:
    """Time ``model``'s own layers at the channel counts it can take; a `LatencyTable` for ``device="host"``.

    Args:
      model: a built tf-keras model with a fixed input size (a Keras 3 model is timed through its tf-keras twin).
      threads: interpreter threads (the table is for this thread count).
      points: grid points on an input-channel axis (about ``n/points`` apart; the cost is linear there).
      channel_step: output channels (a depthwise layer's channels) are timed at every multiple of it (at most 16 counts per
        layer): 8 matches the tiles of XNNPack's kernels on ARM and x86 (x86 with AVX-512 uses 16 or 32, which an 8-grid
        also resolves).
      rounds, block: each one-layer model runs ``rounds`` blocks of ``block`` invocations (interleaved).
      calibrate: fractions of MACs removed (uniform channel pruning) of the whole-model variants, beside the dense model,
        on which the remainder is calibrated.
      calibrate_weights: the fraction of parameters removed (global channel pruning, which takes most from the wide deep
        layers) of one more calibration model: it keeps most element-wise activations but about half the weights, so the fit
        can tell the weights' memory cost from the element-wise cost (see `tfprune.latency.table`). None: no weight term.
      cache: True (the default cache file), False (time everything), or a path to a JSON cache file.
      recheck_cache: when layers come from the cache, time each of them again now at the model's own channel counts and
        scale their cached times by `tfprune.latency.table.speed_factor`: a machine's speed moves between sittings (a
        dense MobileNetV2 read 0.96 ms, then 0.59 ms, in two runs of ``benchmarks/latency_table_error.py`` on the
        project's machine), and the calibration models are always timed now. The factor is in the table's notes; one
        outside `TRUSTED_SPEED_FACTORS` (0.5-2x) is not applied (the notes say so).
      progress: called with a line of text as the work goes on (None: quiet).
    """
    from tfprune._keras import is_keras3_object

    if is_keras3_object(model):
        from tfprune.keras3.convert import to_tf_keras

        model = to_tf_keras(model)
    threads = check_int(threads, "threads", 1)
    points = check_int(points, "points", 1)
    channel_step = check_int(channel_step, "channel_step", 1)
    rounds = check_int(rounds, "rounds", 1)
    block = check_int(block, "block", 1)
    calibrate = [fraction(f, "calibrate[i] (a fraction of MACs removed)") for f in calibrate]
    if calibrate_weights is not None:
        calibrate_weights = fraction(calibrate_weights, "calibrate_weights (a fraction of parameters removed)")
    say = progress or (lambda _: None)
    cg, layers, todo = probe_plan(model, points, channel_step)
    cache_path = (cache if isinstance(cache, str) else _cache_file(threads)) if cache else None
    stored = _read_cache(cache_path) if cache_path else {}
    empty = empty_model()
    timings: dict[str, LayerTiming] = {}
    from_cache: list[str] = []
    runtime = ""
    for i, (sig, (layer, in_shape, g_in, g_out, step_in, step_out)) in enumerate(todo.items(), 1):
        hit = stored.get(sig)
        if hit and set(g_in.tolist()) <= set(hit["grid_in"]) and set(g_out.tolist()) <= set(hit["grid_out"]):
            timings[sig] = LayerTiming(np.asarray(hit["grid_in"]), np.asarray(hit["grid_out"]), np.asarray(hit["ms"]), hit.get("description", ""),
                                       step_in, step_out)
            say(f"[latency] {i}/{len(todo)} {type(layer).__name__} {layer.name}: cached")
            from_cache.append(sig)
            continue
        contents = {"empty": tflite_bytes(empty)}
        for a in g_in:
            for b in g_out:
                contents[(int(a), int(b))] = tflite_bytes(one_layer_model(layer, in_shape, int(a), int(b)))
        ms, runtime = time_tflite(contents, threads, rounds, block)
        base = ms.pop("empty")
        grid = monotone([[max(ms[(int(a), int(b))] - base, 0.0) for b in g_out] for a in g_in])
        desc = f"{type(layer).__name__} like {layer.name!r}, input {in_shape}"
        timings[sig] = LayerTiming(g_in, g_out, grid, desc, step_in, step_out)
        stored[sig] = {"grid_in": g_in.tolist(), "grid_out": g_out.tolist(), "ms": grid.tolist(), "description": desc}
        if cache_path:
            _write_cache(cache_path, stored)
        say(f"[latency] {i}/{len(todo)} {desc}: {grid.size} points, {grid.min():.4f}-{grid.max():.4f} ms")
    notes = [f"output channels every {channel_step} (stepped), input channels at {points} points (linear); "
             f"{rounds} x {block} invocations per point, less an empty model's time; made non-decreasing"]
    if from_cache and recheck_cache:
        factor, applied, re_runtime = _rescale_cached(timings, {s: todo[s] for s in from_cache}, empty, threads, rounds, block)
        runtime = runtime or re_runtime
        if applied:
            notes.append(f"{len(from_cache)} cached layer(s) re-timed now at the model's channel counts: the machine runs at "
                         f"{factor:.3f}x the cache's times, and their cached grids were scaled by that")
        else:
            lo, hi = TRUSTED_SPEED_FACTORS
            notes.append(f"{len(from_cache)} cached layer(s) re-timed now at the model's channel counts: {factor:.3f}x the cache's times, "
                         f"outside {lo:g}-{hi:g}x, so not a change of speed (layers too small for the clock, or a cache made in another "
                         "setting); the cached times were kept. Fix: build_table(..., cache=False) times every layer now")
        say(f"[latency] {notes[-1]}")
    table = LatencyTable(timings=timings, layers=layers, device="host", threads=threads, runtime=runtime, model=model.name, notes=notes)
    cost = LatencyCost(cg, table)
    table.elementwise_elements = cost.elementwise_total
    table.weight_elements = cost.weight_total
    variants = calibration_variants(model, cg, cost, calibrate, calibrate_weights)
    measured = measure_model_ms({k: m for k, (m, _) in variants.items()}, threads, rounds=max(rounds, 10), block=block)
    fit_remainder(table, cost, {k: (measured[k], removed) for k, (_, removed) in variants.items()})
    say(f"[latency] remainder: {table.base_ms:.4f} ms + {table.elementwise_ms:.4f} ms x element-wise share + {table.weights_ms:.4f} ms "
        "x weight share")
    return table
