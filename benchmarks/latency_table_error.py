"""How well does the latency table predict whole models, with and without its weight term?

    python benchmarks/latency_table_error.py --models vgg16_w0.25,mobilenetv2_w0.5,resnet56

For each CIFAR-10 checkpoint: the per-layer timings of `tfprune.latency.build_table`
(cached, or timed now with ``--fresh-layers``), then ``--repeats`` interleaved timings (float TFLite, 1 thread, batch 1; fresh interpreters each
time; the fits use each model's median) of

- the calibration models `build_table` fits its remainder on: the dense model, uniform
  channel pruning at 30% and 60% of MACs, global channel pruning at 50% of parameters;
- held-out models the fit never sees: LAMP channel pruning at 50% of parameters, global
  and LAMP at 50% of MACs, and the final models of `benchmarks/compress.py` runs whose
  resume state is on this machine (``benchmarks/checkpoints/compress-state-<tag>-<budget>/``,
  not committed: listed in the JSON when used).

The remainder is fitted four times on the same timings: without the weight term (the
table before format /3: dense and the two uniform models, ``base + elementwise * share``),
with it (all four calibration models, ``+ weights * weight_share``: `build_table`'s fit before
``recheck_cache``, on the rows as cached),
with it but the element-wise term free to be negative (``signed``: a candidate that
would absorb the one-layer models' input/output copies, which scale with activations), and
with it on the layer rows scaled to this sitting's speed (``rescaled``: `build_table`'s default
``recheck_cache=True`` re-times each cached row once at the model's own channel counts). Reported per
model: measured latency ratio to the dense model, the four predicted ratios and their
errors (predicted / measured - 1), and how far one timing's ratio strays from the median (the
noise a single timing, all a search step or a benchmark row makes, carries). JSON after every model (``--resume`` skips those
done): ``benchmarks/results/latency_table_error.{json,md}``, ``{"models": {tag:
{"dense_ms": ..., "speed_factor": ..., "fits": {"without": {...}, "with": {...}, "signed": {...}, "rescaled": {...}}, "variants": [{"variant": ...,
"role": "calibration" | "held-out", "measured_ratio": ..., "predicted_without": ...,
"predicted_with": ..., "predicted_signed": ..., "predicted_rescaled": ..., "share": ..., "weight_share": ..., "ms": ...,
"ratio_repeats": [...], "layer_sum_ms": ...}]}}, "config": {"command": ...,
"cpu_minutes": ...}}``.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
from _cifar import CHECKPOINTS, RESULTS, Ledger, command_line, load_dense, repo_path, write_markdown_with_footer  # noqa: E402

import tfprune as tp  # noqa: E402
from tfprune.latency import LatencyCost, build_table  # noqa: E402
from tfprune.latency.measure import tflite_bytes, time_tflite  # noqa: E402
from tfprune.latency.table import calibrate_remainder  # noqa: E402
from tfprune.structured.graph import channel_graph  # noqa: E402
from tfprune.structured.plan import plan_and_shrink  # noqa: E402

DEFAULT_OUT = os.path.join(RESULTS, "latency_table_error.json")
CALIBRATION = {"uniform macs=0.3": dict(macs=0.3, allocation="uniform"), "uniform macs=0.6": dict(macs=0.6, allocation="uniform"),
               "global params=0.5": dict(params=0.5, allocation="global")}
HELD_OUT = {"lamp params=0.5": dict(params=0.5, allocation="lamp"), "global macs=0.5": dict(macs=0.5, allocation="global"),
            "lamp macs=0.5": dict(macs=0.5, allocation="lamp")}
WITHOUT = ("dense", "uniform macs=0.3", "uniform macs=0.6")  # what build_table calibrated on before the weight term


def compress_finals(tag: str, state_dir: str) -> dict[str, str]:
    """``{"compress <budget> (final)": path}`` for the compress runs' resume states of ``tag`` on this machine."""
    out = {}
    for path in sorted(glob.glob(os.path.join(state_dir, f"compress-state-{tag}-*", "model.keras"))):
        budget = os.path.basename(os.path.dirname(path)).rsplit("-", 1)[-1]
        out[f"compress {budget} (final)"] = path
    return out


FITS = {"without": "no weight term", "with": "weight term, cached layer rows as stored (build_table's fit before recheck_cache)",
        "signed": "weight term, element-wise term may be negative",
        "rescaled": "weight term, cached layer rows scaled to this sitting's speed (build_table's default, recheck_cache)"}


def fit(rows: dict, names: list[str], weights: bool, signed: tuple[str, ...] = (), layer_sum: str = "layer_sum") -> tuple[float, float, float]:
    return calibrate_remainder([rows[n]["ms"] for n in names], [rows[n][layer_sum] for n in names], [rows[n]["share"] for n in names],
                               [rows[n]["weight_share"] for n in names] if weights else None, signed=signed)


def measure(tag: str, args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    dense = load_dense(tag, args.checkpoint_dir)
    # the layers' timings only: cached (possibly from another session) unless --fresh-layers times them now, in the same
    # sitting as the whole models
    table = build_table(dense, threads=1, calibrate=(), calibrate_weights=None, cache=not args.fresh_layers, recheck_cache=False,
                        progress=print)
    # the same rows scaled to this sitting's speed (build_table's default, recheck_cache): each cached row re-timed once now;
    # rows timed now (--fresh-layers) are already on this sitting's clock
    rescaled = table if args.fresh_layers else build_table(dense, threads=1, calibrate=(), calibrate_weights=None, progress=print)
    models = {"dense": dense}
    for name, kw in {**CALIBRATION, **HELD_OUT}.items():
        models[name] = plan_and_shrink(dense, **kw)[1]
    finals = compress_finals(tag, args.state_dir)
    for name, path in finals.items():
        models[name] = tp.load_model(path)
    files = {name: tflite_bytes(model) for name, model in models.items()}
    # --repeats interleaved timings of the same files, each with fresh interpreters: the fits use each model's median, and
    # the spread of a model's ratio across them is how far one timing (all a search or a benchmark row makes) can stray
    timings = [time_tflite(files, threads=1, rounds=args.rounds, block=10)[0] for _ in range(args.repeats)]
    ms = {name: float(np.median([t[name] for t in timings])) for name in models}
    rows = {}
    for name, model in models.items():
        cost = LatencyCost(channel_graph(model), table)
        none = np.zeros(cost.all_labels.size, bool)
        rows[name] = {"ms": ms[name], "ms_repeats": [t[name] for t in timings],
                      "ratio_repeats": [t[name] / t["dense"] for t in timings],
                      "layer_sum": sum(table.layer_ms(n, *c) for n, c in cost.channels(none).items()),
                      "layer_sum_rescaled": sum(rescaled.layer_ms(n, *c) for n, c in cost.channels(none).items()),
                      "share": cost.share(none), "weight_share": cost.weight_share(none)}
    fits = {"without": fit(rows, list(WITHOUT), False), "with": fit(rows, ["dense", *CALIBRATION], True),
            "signed": fit(rows, ["dense", *CALIBRATION], True, signed=("elementwise",)),
            "rescaled": fit(rows, ["dense", *CALIBRATION], True, layer_sum="layer_sum_rescaled")}

    def predicted(name: str, which: str) -> float:
        base, per, w = fits[which]
        r = rows[name]
        return r["layer_sum_rescaled" if which == "rescaled" else "layer_sum"] + base + per * r["share"] + w * r["weight_share"]

    variants = []
    for name, r in rows.items():
        entry = {"variant": name, "role": "calibration" if name == "dense" or name in CALIBRATION else "held-out",
                 "measured_ratio": r["ms"] / rows["dense"]["ms"], "share": r["share"], "weight_share": r["weight_share"],
                 "params": int(models[name].count_params()), "ms": r["ms"], "layer_sum_ms": r["layer_sum"],
                 "layer_sum_rescaled_ms": r["layer_sum_rescaled"],
                 "ms_repeats": r["ms_repeats"], "ratio_repeats": r["ratio_repeats"]}
        for which in fits:
            entry[f"predicted_{which}"] = predicted(name, which) / predicted("dense", which)
            entry[f"error_{which}"] = entry[f"predicted_{which}"] / entry["measured_ratio"] - 1
        variants.append(entry)
        print(f"[table error] {tag} {name:24s} measured {entry['measured_ratio']:.3f}  "
              + "  ".join(f"{w} {entry[f'predicted_{w}']:.3f} ({100 * entry[f'error_{w}']:+.1f}%)" for w in fits))
    return {"model": tag, "dense_ms": rows["dense"]["ms"], "seconds": time.perf_counter() - t0,
            "speed_factor": rows["dense"]["layer_sum_rescaled"] / rows["dense"]["layer_sum"], "rescale_notes": rescaled.notes[1:],
            "fits": {k: dict(zip(("base_ms", "elementwise_ms", "weights_ms"), v)) for k, v in fits.items()},
            "variants": variants, "compress_finals": {k: repo_path(v) for k, v in finals.items()}}


def leave_one_out(run: dict, signed: tuple[str, ...]) -> list[float]:
    """|error| of each non-dense calibration model's ratio when the weight-term fit is made without it (from the stored
    milliseconds and layer sums; nothing timed): whether the calibration models alone could choose between fits."""
    cal = [v for v in run["variants"] if v["role"] == "calibration"]
    errors = []
    for i in range(1, len(cal)):
        rest = [c for j, c in enumerate(cal) if j != i]
        base, per, w = calibrate_remainder([c["ms"] for c in rest], [c["layer_sum_ms"] for c in rest], [c["share"] for c in rest],
                                           [c["weight_share"] for c in rest], signed=signed)
        left, dense = ([v["layer_sum_ms"] + base + per * v["share"] + w * v["weight_share"] for v in (cal[i], cal[0])])
        errors.append(abs(left / dense / (cal[i]["ms"] / cal[0]["ms"]) - 1))
    return errors


def timing_spread(v: dict) -> float:
    """Largest |one timing's ratio / the median ratio - 1| of a variant over the repeated timings (0 with one timing)."""
    reps = v.get("ratio_repeats") or [v["measured_ratio"]]
    return float(max(abs(r / v["measured_ratio"] - 1) for r in reps))


def fits_text(fit: dict) -> str:
    return (f"base {fit['base_ms']:+.4f} ms, element-wise {fit['elementwise_ms']:+.4f} ms x share, "
            f"weights {fit['weights_ms']:.4f} ms x weight share")


def write_markdown(data: dict, out: str) -> None:
    lines = ["# The latency table's error, with and without its weight term", "",
             "Ratio = latency / the dense model's (float TFLite, 1 thread, batch 1, timed interleaved); error = predicted / measured - 1. "
             "Fits of the remainder: " + "; ".join(f"*{k}*: {v}" for k, v in FITS.items()) + ".",
             "Layers' timings: " + ("timed in the same sitting as the whole models (`--fresh-layers`)."
                                    if data["config"].get("budget", {}).get("fresh_layers") else "from the cache (possibly another session's)."),
             ""]
    for run in data["runs"]:
        held = [v for v in run["variants"] if v["role"] == "held-out"]
        which = [w for w in FITS if w in run["fits"]]
        mean = {w: float(np.mean([abs(v[f"error_{w}"]) for v in held])) for w in which}
        lines += [f"## {run['model']}: dense {run['dense_ms']:.3f} ms", "",
                  "Held-out mean |error|: " + ", ".join(f"{100 * mean[w]:.1f}% ({w})" for w in which) + ". Remainder fitted: "
                  + "; ".join(f"{w}: {fits_text(run['fits'][w])}" for w in which) + ".", ""]
        loo = {w: leave_one_out(run, s) for w, s in (("with", ()), ("signed", ("elementwise",)))}
        lines += ["Leave-one-out on the calibration models (each fitted without it, then predicted), mean |error|: "
                  + ", ".join(f"{100 * np.mean(e):.1f}% ({w}: " + ", ".join(f"{100 * x:.1f}%" for x in e) + ")" for w, e in loo.items())
                  + ".", ""]
        reps = len(run["variants"][0].get("ratio_repeats") or [0])
        if reps > 1:
            spread = [timing_spread(v) for v in run["variants"][1:]]
            lines += [f"Timing noise: the same files timed {reps} times (fresh interpreters each time); measured ratio = the median "
                      f"timing's. One timing's ratio strays from it by up to {100 * max(spread):.1f}% "
                      f"(mean over the pruned models {100 * np.mean(spread):.1f}%).", ""]
        if "speed_factor" in run:
            lines += [f"Cached layer rows against this sitting: the machine runs at {run['speed_factor']:.3f}x the cache's times "
                      "(each row re-timed once at the model's own channel counts); *rescaled* fits on the rows scaled by that.", ""]
        lines += ["| model | role | params | measured ratio | " + ("one timing's ratio, min-max | " if reps > 1 else "")
                  + " | ".join(f"predicted, {w} | error" for w in which) + " |",
                  "|---|---|---:|---:|" + ("---:|" if reps > 1 else "") + "---:|---:|" * len(which)]
        for v in run["variants"]:
            span = (f"{min(v['ratio_repeats']):.3f}-{max(v['ratio_repeats']):.3f} | " if reps > 1 else "")
            lines.append(f"| {v['variant']} | {v['role']} | {v['params']:,} | {v['measured_ratio']:.3f} | {span}"
                         + " | ".join(f"{v[f'predicted_{w}']:.3f} | {100 * v[f'error_{w}']:+.1f}%" for w in which) + " |")
        lines.append("")
    write_markdown_with_footer(lines, data, out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="vgg16_w0.25,mobilenetv2_w0.5,resnet56", help="comma-separated checkpoint tags")
    ap.add_argument("--rounds", type=int, default=30, help="interleaved rounds of 10 invocations per model")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timings of the same files (fresh interpreters each); "
                    "the fits use each model's median")
    ap.add_argument("--fresh-layers", action="store_true", help="time the layers now, not from the cache: layers and whole models "
                    "timed in one sitting")
    ap.add_argument("--checkpoint-dir", default=CHECKPOINTS)
    ap.add_argument("--state-dir", default=CHECKPOINTS, help="where benchmarks/compress.py keeps its resume states")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    settings = {"rounds": args.rounds, "repeats": args.repeats, "threads": 1, "fresh_layers": args.fresh_layers}
    ledger = Ledger(args.out, settings, command_line(__file__, argv), args.resume, ("model",))
    for tag in args.models.split(","):
        if ledger.done(model=tag):
            print(f"[table error] {tag}: done (--resume)")
            continue
        ledger.add(measure(tag, args))
        ledger.save()
        write_markdown(ledger.data, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
