"""`tfprune.compress` against uniform channel pruning and a MACs-budget plan at the same latency, on CIFAR-10.

    python benchmarks/compress.py --models vgg16_w0.25 --budgets 0.7,0.5 --max-minutes 110 --resume

For each dense checkpoint (``benchmarks/checkpoints/<tag>.keras``) one latency
table is built on this machine (`tfprune.latency.build_table`, 1 thread,
cached). For each latency budget (a ratio of the dense model's predicted
latency) three methods get the same fine-tuning budget in optimizer steps
(``iterations * finetune_steps + final_steps``, Adam 1e-3 with a cosine decay,
batch 128 on the augmented pipeline; the last 5,000 training images are kept
out as the search's validation set):

* ``compress``: the NetAdapt-style search (`tfprune.compress`, defaults: channel
  cuts and shallowing's removable layers/blocks, every accepted step timed so
  it stops on the measured budget): its accepted steps' fine-tuning, then a
  final fine-tune with what is left of the budget (its path is plotted in
  ``compress_path_<model>_<budget>.png``);
* ``uniform``: every channel group loses the same fraction
  (`tfprune.plan(latency=..., allocation="uniform")`), the fraction found by
  bisection so the shrunk model's **measured** ratio is at most the budget and
  nearest to it;
* ``macs``: the project's MACs-budget channel plan (``allocation="importance"``,
  How Compact? at channel level), its MACs fraction found the same way, on
  the measured ratio: an allocation that counts MACs, not milliseconds.

All three land at or under the budget *measured* (compress stops on its own
timings), so they are compared at the same measured latency.

Every pruned model is timed as float TFLite beside the dense model
(interleaved, 1 thread): the measured ratio, the table's predicted ratio, test
accuracy and the file size are recorded. JSON after every configuration
(``--resume``); ``--max-minutes`` stops before a configuration would pass it.
The compress search keeps its state in
``<checkpoint-dir>/compress-state-<model>-<budget>/`` (no time budget), so a run
killed mid-search resumes there from its last accepted step.

Writes ``benchmarks/results/compress.{json,md,png}``:
``{"models": {"vgg16_w0.25": {"dense_acc": ..., "dense_ms": ..., "results": [{"method": "compress", "latency_budget": 0.5,
"latency_ratio": ..., "predicted_ratio": ..., "acc": ..., "tflite_bytes": ...}]}}, "runs": [...], "config": {"command": ...}}``
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
from _cifar import RESULTS, Deadline, Ledger, accuracy_on, check_subset, command_line, common_arguments, dense_entry, load_data, write_markdown_with_footer  # noqa: E402

import tfprune as tp  # noqa: E402
from tfprune.latency import LatencyCost, build_table, compress, measure_model_ms  # noqa: E402
from tfprune.latency.measure import tflite_bytes, time_tflite  # noqa: E402
from tfprune.latency.search import fine_tune  # noqa: E402
from tfprune.latency.table import FORMAT as TABLE_FORMAT  # noqa: E402
from tfprune.structured.graph import channel_graph  # noqa: E402
from tfprune.structured.plan import plan_and_shrink  # noqa: E402

DEFAULT_OUT = os.path.join(RESULTS, "compress.json")
GRID = [round(0.05 * i, 2) for i in range(1, 19)]  # the baselines' knobs: fraction of predicted latency / of MACs removed
METHODS = ("compress", "uniform", "macs")


def predicted_ratio(model, table, dense_ms: float) -> float:
    return LatencyCost(channel_graph(model), table).estimate() / dense_ms


class MeasuredRatio:
    """The measured latency ratio of a model to the dense one (float TFLite, interleaved with the dense file, 1 thread)."""

    def __init__(self, dense, threads: int) -> None:
        self.dense_file, self.threads = tflite_bytes(dense), threads

    def __call__(self, small) -> float:
        ms, _ = time_tflite({"dense": self.dense_file, "small": tflite_bytes(small)}, self.threads, rounds=20, block=10)
        return ms["small"] / ms["dense"]


def matched_plan(make, budget: float, ratio_of, grid: list[float], tol: float = 0.01):
    """The plan ``make(f)`` (``f``: a knob that makes the model faster as it grows) whose shrunk model's ``ratio_of`` is at most
    ``budget`` and nearest to it: a coarse scan of ``grid``, then bisection inside the bracket where the ratio crosses the budget;
    of every plan tried, the one at most ``budget`` and nearest (a measured ratio need not fall monotonically)."""
    tried = []

    def at(f: float):
        plan, small = make(f)
        tried.append((ratio_of(small), f, plan, small))
        return tried[-1][0]

    lo = hi = None
    for f in grid:
        if at(f) <= budget:
            hi = f
            break
        lo = f
    if hi is not None:
        lo = lo or 0.0
        for _ in range(8):
            mid = (lo + hi) / 2
            r = at(mid)
            if r <= budget:
                hi = mid
            else:
                lo = mid
            if budget - tol <= r <= budget:
                break
    under = [t for t in tried if t[0] <= budget]
    if not under:
        raise SystemExit(f"no setting up to {grid[-1]} reaches {budget} of the dense latency")
    r, f, plan, small = max(under, key=lambda t: t[0])
    return plan, small, f, r


def summarize(data: dict) -> dict:
    for tag, entry in data["models"].items():
        entry["results"] = [{k: r[k] for k in ("method", "latency_budget", "latency_ratio", "predicted_ratio", "acc", "tflite_bytes",
                                               "macs", "params", "finetune_steps")}
                            for r in data["runs"] if r["model"] == tag]
    return data


def write_markdown(data: dict, out: str) -> None:
    lines = []
    for tag, entry in data["models"].items():
        lines += [f"### {tag}: dense {100 * entry['dense_acc']:.2f}%, {entry.get('dense_ms', float('nan')):.3f} ms (float TFLite, 1 thread, "
                  f"batch 1), table predicts {entry.get('dense_predicted_ms', float('nan')):.3f} ms", "",
                  "| budget | method | measured ratio | predicted ratio | accuracy % | MACs | params | .tflite bytes |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|"]
        for r in sorted(entry.get("results", []), key=lambda r: (-r["latency_budget"], METHODS.index(r["method"]))):
            lines.append(f"| {r['latency_budget']:g} | {r['method']} | {r['latency_ratio']:.3f} | {r['predicted_ratio']:.3f} | "
                         f"{100 * r['acc']:.2f} | {r['macs']:,} | {r['params']:,} | {r['tflite_bytes']:,} |")
        lines.append("")
    write_markdown_with_footer(lines, data, out)


def plot(data: dict, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tags = list(data["models"])
    if not tags:
        return
    fig, axes = plt.subplots(1, len(tags), figsize=(5 * len(tags), 4), squeeze=False)
    for ax, tag in zip(axes[0], tags):
        entry = data["models"][tag]
        for i, m in enumerate(METHODS):
            rs = [r for r in entry.get("results", []) if r["method"] == m]
            ax.plot([r["latency_ratio"] for r in rs], [100 * r["acc"] for r in rs], "o", color=f"C{i}", label=m, ms=8)
        ax.axhline(100 * entry["dense_acc"], color="grey", ls="--", lw=1, label="dense")
        ax.set_xlabel("measured latency / dense")
        ax.set_ylabel("test accuracy %")
        ax.set_title(tag)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    from tfprune.files import atomic_path

    with atomic_path(os.path.splitext(out)[0] + ".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="vgg16_w0.25")
    ap.add_argument("--budgets", default="0.7,0.5", help="latency budgets, ratios of the dense model's")
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--finetune-steps", type=int, default=100)
    ap.add_argument("--final-steps", type=int, default=780)
    ap.add_argument("--proposal-samples", type=int, default=1000)
    ap.add_argument("--max-step-drop", type=float, default=0.05,
                    help="compress halves a step whose best proposal loses more than this (compress's default); recorded per run")
    ap.add_argument("--lr", type=float, default=1e-4, help="fine-tuning learning rate (Adam, cosine), every method alike")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--validation", type=int, default=5000, help="training images kept out as the search's validation set")
    common_arguments(ap, DEFAULT_OUT)
    args = ap.parse_args(argv)
    check_subset(ap, args, DEFAULT_OUT)
    budgets = [float(b) for b in args.budgets.split(",")]
    total_steps = args.iterations * args.finetune_steps + args.final_steps
    budget = {"iterations": args.iterations, "finetune_steps": args.finetune_steps, "final_steps": args.final_steps,
              "fine_tuning_steps_per_method": total_steps, "proposal_samples": args.proposal_samples, "lr": args.lr,
              "batch_size": args.batch_size, "threads": args.threads, "validation": args.validation, "subset": args.subset}
    ledger = Ledger(args.out, budget, command_line(__file__, argv), args.resume, ("model", "method", "latency_budget"))
    deadline = Deadline(args.max_minutes)
    (xt, yt), test = load_data(args.data, args.subset)
    n_val = min(args.validation, len(xt) // 5)
    xv, yv = xt[-n_val:].astype(np.float32), yt[-n_val:]
    xtr, ytr = xt[:-n_val], yt[:-n_val]
    last = 0.0
    for tag in args.models.split(","):
        dense, entry = dense_entry(ledger, tag, args, test)
        table = build_table(dense, threads=args.threads, progress=print)
        measured = MeasuredRatio(dense, args.threads)
        dense_pred = table.predict()
        entry.update(dense_predicted_ms=dense_pred, table_notes=table.notes)
        for b in budgets:
            for method in METHODS:
                if ledger.done(model=tag, method=method, latency_budget=b):
                    continue
                if not deadline.allows(last):
                    print(f"[compress] stopping: the next configuration would pass --max-minutes {args.max_minutes}")
                    return 0
                t0, c0 = time.time(), time.process_time()
                train = tp.datasets.cifar10_pipeline(xtr, ytr, args.batch_size, seed=7)
                if method == "compress":
                    # the search's state on disk: a run stopped mid-search (a session's end) resumes from its last accepted step
                    state = os.path.join(args.checkpoint_dir, f"compress-state-{tag}-{b:g}")
                    resumed = os.path.isfile(os.path.join(state, "state.json"))
                    # a resumed search goes on with the table it started with (saved in its state; this run's table,
                    # re-calibrated, would not match the state's settings): compress reads it when table=None
                    res = compress(dense, train, validation=(xv, yv), latency=b, table=None if resumed else table,
                                   iterations=args.iterations,
                                   proposal_samples=args.proposal_samples, finetune_steps=args.finetune_steps, final_steps=0,
                                   learning_rate=args.lr, batch_size=args.batch_size, seed=0, verbose=0, progress=print,
                                   time_budget=None, state_dir=state, max_step_drop=args.max_step_drop)
                    small = res.model
                    # the final fine-tune: what the search's steps left of the budget, with the baselines' recipe
                    final = max(0, total_steps - sum(s.finetune_steps for s in res.steps))
                    extra = {"steps": len(res.steps), "search_seconds": res.search_seconds, "final_steps": final,
                             "path": [s.to_dict() for s in res.steps], "units_removed": sum(s.kind != "channels" for s in res.steps),
                             "search_resumed": resumed, "max_step_drop": args.max_step_drop}  # then minutes / cpu_minutes count this segment only
                    res.plot(os.path.join(os.path.dirname(args.out), f"compress_path_{tag}_{b:g}.png"))
                elif method == "uniform":  # the predicted-latency knob, set so the *measured* ratio meets the budget
                    def make(f, table=table, dense=dense):
                        plan, small, _ = plan_and_shrink(dense, latency=1.0 - f, allocation="uniform",
                                                         latency_cost=lambda cg: LatencyCost(cg, table))
                        return plan, small
                    plan, small, knob, matched = matched_plan(make, b, measured, GRID)
                    extra = {"predicted_latency_removed_target": knob, "matched_ratio": matched}
                else:  # the MACs knob, set so the *measured* ratio meets the budget
                    def make(f, dense=dense):
                        plan, small, _ = plan_and_shrink(dense, macs=f, allocation="importance")
                        return plan, small
                    plan, small, knob, matched = matched_plan(make, b, measured, GRID)
                    extra = {"macs_target": knob, "plan_macs_removed": plan.achieved, "matched_ratio": matched}
                fine_tune(small, train, extra["final_steps"] if method == "compress" else total_steps, args.lr, args.batch_size, 0,
                          tp.training.finetune.model_loss(dense).loss)
                acc = accuracy_on(small, *test)
                ms = measure_model_ms({"dense": dense, "small": small}, threads=args.threads)
                prof = tp.profile(small)
                run = {"model": tag, "method": method, "latency_budget": b, "latency_ratio": ms["small"] / ms["dense"],
                       "predicted_ratio": predicted_ratio(small, table, dense_pred), "acc": acc, "tflite_bytes": len(tflite_bytes(small)),
                       "macs": int(prof.macs), "params": int(prof.params), "finetune_steps": total_steps, "dense_ms": ms["dense"],
                       "small_ms": ms["small"], "minutes": (time.time() - t0) / 60, "cpu_minutes": (time.process_time() - c0) / 60,
                       "table_format": TABLE_FORMAT, **extra}
                entry["dense_ms"] = ms["dense"]
                ledger.add(run)
                summarize(ledger.data)
                ledger.save()
                write_markdown(ledger.data, args.out)
                plot(ledger.data, args.out)
                last = time.time() - t0
                print(f"[compress] {tag} {method:8s} budget {b:g}: measured {run['latency_ratio']:.3f} (predicted {run['predicted_ratio']:.3f}), "
                      f"acc {100 * acc:.2f}% ({run['minutes']:.1f} min)", flush=True)
    summarize(ledger.data)
    ledger.save()
    write_markdown(ledger.data, args.out)
    plot(ledger.data, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
