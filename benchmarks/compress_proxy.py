"""Is `tfprune.compress`'s proposal score (accuracy after BatchNorm re-estimation) a fair stand-in for NetAdapt's short fine-tune?

    python benchmarks/compress_proxy.py --models vgg16_w0.25 --states 0,0.3 --steps 100

NetAdapt scores each proposal by its accuracy after a short fine-tune; `compress`
by default scores it without one (``proposal_steps=0``: BatchNorm statistics
re-estimated, then accuracy on ``--proposal-samples`` validation images), which
costs seconds instead of a fine-tune per proposal. This benchmark checks the
proxy against the fine-tune on the proposals of one search iteration.

For each model state (``0``: the dense checkpoint; ``f > 0``: the dense model
cut uniformly by channels to remove ``f`` of its predicted latency, as a search
part-way through), the proposals of one iteration at the step a 0.5 budget in 8
iterations asks for (`tfprune.latency.search.propose`: every channel group's
smallest cut, every removable layer) are built, and each is scored twice on the
same validation images: the proxy, and the accuracy after ``--steps`` fine-tuning
steps (Adam 1e-4, cosine, batch 128, the augmented pipeline; the same seed for
every proposal). Reported per state: Spearman's rank correlation between the two
scores, whether the proxy picks the proposal the fine-tune would, and the
**regret**: the fine-tuned accuracy of the fine-tune's best proposal minus that of
the proxy's pick (0 when they agree; "same pick" counts a tie in fine-tuned accuracy as agreement).

Writes ``benchmarks/results/compress_proxy.{json,md}`` after every state
(``--resume`` skips the states done): ``{"models": {tag: {"states": [{"state": f,
"spearman": ..., "same_pick": ..., "regret": ..., "proposals": [{"what": ..., "kind": ...,
"predicted_ms": ..., "proxy": ..., "tuned": ...}]}]}}, "config": {"command": ..., "cpu_minutes": ...}}``.
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
from _cifar import RESULTS, Deadline, Ledger, check_subset, command_line, common_arguments, dense_entry, load_data, write_markdown_with_footer  # noqa: E402

import tfprune as tp  # noqa: E402
from tfprune.latency import LatencyCost, build_table  # noqa: E402
from tfprune.latency.search import fine_tune, propose  # noqa: E402
from tfprune.structured.graph import channel_graph  # noqa: E402
from tfprune.structured.plan import plan_and_shrink  # noqa: E402
from tfprune.training.finetune import model_loss, reestimate_batchnorm  # noqa: E402

DEFAULT_OUT = os.path.join(RESULTS, "compress_proxy.json")


def ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``v`` (ties share their mean rank)."""
    v = np.asarray(v, float)
    order = np.argsort(v, kind="stable")
    r = np.empty(v.size)
    r[order] = np.arange(v.size)
    for value in np.unique(v):
        tie = v == value
        r[tie] = r[tie].mean()
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (NaN when either side is constant)."""
    ra, rb = ranks(a), ranks(b)
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), -1) == y.reshape(-1)))


def write_markdown(data: dict, out: str) -> None:
    lines = []
    for tag, entry in data["models"].items():
        lines += [f"### {tag}: proxy (BatchNorm re-estimated) vs {data['config']['budget']['steps']} fine-tuning steps", "",
                  "| state (predicted latency removed) | proposals | Spearman | same pick | regret (points) |", "|---:|---:|---:|---|---:|"]
        for st in entry.get("states", []):
            lines.append(f"| {st['state']:g} | {len(st['proposals'])} | {st['spearman']:.2f} | {'yes' if st['same_pick'] else 'no'} | "
                         f"{100 * st['regret']:.2f} |")
        lines.append("")
    write_markdown_with_footer(lines, data, out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="vgg16_w0.25")
    ap.add_argument("--states", default="0,0.3", help="fractions of the predicted latency removed (uniformly) before the iteration")
    ap.add_argument("--steps", type=int, default=100, help="fine-tuning steps of the reference score")
    ap.add_argument("--proposal-samples", type=int, default=1000)
    ap.add_argument("--validation", type=int, default=5000, help="training images kept out as validation")
    common_arguments(ap, DEFAULT_OUT)
    args = ap.parse_args(argv)
    check_subset(ap, args, DEFAULT_OUT)
    states = [float(s) for s in args.states.split(",")]
    budget = {"steps": args.steps, "proposal_samples": args.proposal_samples, "lr": 1e-4, "batch_size": args.batch_size,
              "step": "(1 - 0.5) / 8 of the dense prediction", "validation": args.validation, "subset": args.subset}
    ledger = Ledger(args.out, budget, command_line(__file__, argv), args.resume, ("model", "state"))
    deadline = Deadline(args.max_minutes)
    (xt, yt), test = load_data(args.data, args.subset)
    n_val = min(args.validation, len(xt) // 5)
    xv, yv = xt[-n_val:].astype(np.float32)[: args.proposal_samples], yt[-n_val:][: args.proposal_samples]
    xtr, ytr = xt[:-n_val], yt[:-n_val]
    last = 0.0
    for tag in args.models.split(","):
        dense, entry = dense_entry(ledger, tag, args, test)
        table = build_table(dense, progress=print)
        dense_pred = table.predict()
        loss = model_loss(dense).loss
        x_cal = xtr[:1024].astype(np.float32)
        for f in states:
            if ledger.done(model=tag, state=f):
                continue
            if not deadline.allows(last):
                print(f"[compress_proxy] stopping: the next state would pass --max-minutes {args.max_minutes}")
                return 0
            t0 = time.time()
            if f > 0:
                _, start, _ = plan_and_shrink(dense, latency=1.0 - f, allocation="uniform", latency_cost=lambda cg, table=table: LatencyCost(cg, table))
                reestimate_batchnorm(start, x_cal)
            else:
                start = dense
            now = LatencyCost(channel_graph(start), table).estimate()
            proposals = propose(start, table, (1 - 0.5) / 8 * dense_pred, 0.0, x=x_cal[:4])
            rows = []
            for what, kind, count, pred, build in proposals:
                small = build()
                reestimate_batchnorm(small, x_cal)
                proxy = accuracy(small, xv, yv)
                train = tp.datasets.cifar10_pipeline(xtr, ytr, args.batch_size, seed=7)
                fine_tune(small, train, args.steps, 1e-4, args.batch_size, 0, loss)
                rows.append({"what": what, "kind": kind, "count": count, "predicted_ms": pred, "proxy": proxy, "tuned": accuracy(small, xv, yv)})
                print(f"[compress_proxy] {tag} state {f:g}: {kind} {what} -{count}: proxy {proxy:.4f}, tuned {rows[-1]['tuned']:.4f}", flush=True)
            proxy = np.asarray([r["proxy"] for r in rows])
            tuned = np.asarray([r["tuned"] for r in rows])
            pick, best = int(np.argmax(proxy)), int(np.argmax(tuned))
            ledger.add({"model": tag, "state": f, "predicted_ms": now, "spearman": spearman(proxy, tuned), "same_pick": bool(tuned[pick] >= tuned[best]),
                        "regret": float(tuned[best] - tuned[pick]), "proposals": rows, "minutes": (time.time() - t0) / 60})
            entry["states"] = [r for r in ledger.data["runs"] if r["model"] == tag]
            ledger.save()
            write_markdown(ledger.data, args.out)
            last = time.time() - t0
    ledger.save()
    write_markdown(ledger.data, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
