"""Channel scorers side by side: one-shot channel removal on ResNet-20 / MNIST with each scorer.

    nice -n 5 python benchmarks/channel_scorers.py      # budget ~15-20 min on 2 shared, busy cores
    python benchmarks/channel_scorers.py --out /tmp/cs.json --scorers l2,taylor --train-samples 2000 --eval-samples 500   # smoke run

ResNet-20 (`tfprune.models.resnet_cifar(20, (28, 28, 1))`) is trained dense on
MNIST (--data, default ../shared/data/mnist/mnist.npz; the first
``--train-samples`` training images, ``--train-epochs``, Adam 1e-3 cosine
decay, batch 128; then its BatchNorm statistics re-estimated on
``--bn-samples`` images: a short run leaves the moving averages far from the
data's). Then, from that same dense model, for every scorer
(``l2``, ``l1``, ``bn_scale``, ``taylor``, ``obs`` and a ``random`` control
registered here; ``obs_plain``, obs with ``correction=False``, on request) and every allocation in ``--allocations``:
`tfprune.structured.prune_channels` at ``--macs`` of MACs removed
(``min_channels`` 4; the data scorers read the first ``--score-samples``
training images), then three accuracies on the first ``--eval-samples``
test images:

* ``one_shot``: the shrunk model as it comes;
* ``bn``: after `tfprune.training.finetune.reestimate_batchnorm` on ``--bn-samples``
  training images (removing channels shifts every later BatchNorm's input
  statistics);
* ``fine_tuned``: the BN-re-estimated model after the same short fine-tune
  (``--ft-epochs`` on the first ``--ft-samples`` training images, Adam 1e-3
  cosine decay to 0, batch 128, seed 0), for the allocations in
  ``--ft-allocations``.

One seed and a short fine-tune: differences of several points between
fine-tuned rows can be noise. Writes JSON and a markdown table beside it
(``--from-json PATH`` rewrites the markdown of an earlier run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # see benchmarks/structured.py: fit() crashed on some shrunk ResNet-20s with oneDNN

import numpy as np  # noqa: E402
from _common import write_markdown  # noqa: E402

import tfprune as tp  # noqa: E402
from tfprune._keras import keras  # noqa: E402
from tfprune.structured.importance import register_channel_importance  # noqa: E402
from tfprune.structured.prune import prune_channels, top1_accuracy  # noqa: E402
from tfprune.training.finetune import reestimate_batchnorm  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH = 128
SCORERS = ["l2", "l1", "bn_scale", "taylor", "obs", "random"]


def _random(ctx):
    """control: uniform random scores (seed 0)"""
    rng = np.random.default_rng(0)
    return {g.name: rng.random(g.channels) for g in ctx.graph.prunable}


register_channel_importance("random", scorer=_random)


def _obs_plain(ctx):
    """variant: channel OBS without the re-solve (correction=False): the channel's output energy in its consumers"""
    from tfprune.structured.importance import _SCORERS

    ctx.options = {**ctx.options, "correction": False}
    return _SCORERS["obs"].fn(ctx)


register_channel_importance("obs_plain", scorer=_obs_plain, needs_data=True)


def acc(model, xs, ys) -> float:
    return top1_accuracy(ys, model.predict(xs, batch_size=512, verbose=0))


def run(args) -> dict:
    (xt, yt), (xs, ys) = tp.datasets.mnist(args.data)
    xt, yt = xt[: args.train_samples or None], yt[: args.train_samples or None]
    xs, ys = xs[: args.eval_samples or None], ys[: args.eval_samples or None]
    t0 = time.perf_counter()
    keras.utils.set_random_seed(0)
    dense = tp.models.resnet_cifar(20, (28, 28, 1))
    tp.models.compile_classifier(dense, 1e-3, decay_steps=args.train_epochs * -(-len(xt) // BATCH))
    dense.fit(xt, yt, epochs=args.train_epochs, batch_size=BATCH, verbose=0)
    reestimate_batchnorm(dense, xt, n_samples=args.bn_samples)  # a short run leaves the moving statistics far from the data's
    dense_acc = acc(dense, xs, ys)
    prof = tp.profile(dense)
    print(f"dense: {dense_acc:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    x_ft, y_ft = xt[: args.ft_samples], yt[: args.ft_samples]
    score_data = (xt[: args.score_samples], yt[: args.score_samples])
    rows = []
    for allocation in args.allocations.split(","):
        for scorer in args.scorers.split(","):
            t1 = time.perf_counter()
            small, rep = prune_channels(dense, macs=args.macs, data=score_data, eval_data=(xs, ys), importance=scorer, allocation=allocation,
                                        min_channels=4, importance_options={"n_samples": args.score_samples})
            t_plan = time.perf_counter() - t1
            reestimate_batchnorm(small, xt, n_samples=args.bn_samples)
            row = {"scorer": scorer, "allocation": allocation, "macs_removed": args.macs, "achieved_macs_removed": rep.plan.achieved,
                   "macs": rep.plan.macs_after, "params": rep.plan.params_after, "acc_one_shot": rep.acc_shrunk, "acc_bn": acc(small, xs, ys),
                   "acc_fine_tuned": None, "prune_seconds": t_plan, "notes": rep.plan.notes}
            if allocation in args.ft_allocations.split(",") and args.ft_epochs:
                tp.models.compile_classifier(small, 1e-3, decay_steps=args.ft_epochs * -(-len(x_ft) // BATCH))
                keras.utils.set_random_seed(0)
                small.fit(x_ft, y_ft, epochs=args.ft_epochs, batch_size=BATCH, shuffle=True, verbose=0)
                row["acc_fine_tuned"] = acc(small, xs, ys)
            rows.append(row)
            ft = row["acc_fine_tuned"]
            print(f"  {allocation}/{scorer}: achieved {row['achieved_macs_removed']:.3f}, params {row['params']}, one-shot {row['acc_one_shot']:.4f}, "
                  f"BN {row['acc_bn']:.4f}, fine-tuned {'-' if ft is None else f'{ft:.4f}'} ({time.perf_counter() - t0:.0f}s)", flush=True)
    return {"config": {"command": "nice -n 5 python benchmarks/channel_scorers.py " + " ".join(sys.argv[1:]), "model": "resnet20 (28x28x1)",
                       "train_samples": len(xt), "train_epochs": args.train_epochs, "eval_samples": len(xs), "macs": args.macs, "min_channels": 4,
                       "score_samples": args.score_samples, "bn_samples": args.bn_samples, "ft_samples": len(x_ft), "ft_epochs": args.ft_epochs,
                       "seed": 0, "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores visible, shared with other sessions (times vary)"},
            "dense": {"acc": dense_acc, "macs": prof.macs, "params": prof.params},
            "results": rows, "seconds": time.perf_counter() - t0}


def markdown(res: dict) -> list[str]:
    c, d = res["config"], res["dense"]
    f = lambda a: "-" if a is None else f"{a:.4f}"  # noqa: E731
    tuned = any(r["acc_fine_tuned"] is not None for r in res["results"])
    lines = ["# Channel scorers (tfprune.structured.importance): one-shot on ResNet-20 / MNIST", "",
             f"Command: `{c['command']}`; {c['machine']}; total {res['seconds']:.0f} s.", "",
             f"Dense ResNet-20 trained {c['train_epochs']} epoch(s) on the first {c['train_samples']} training images (BatchNorm "
             f"statistics then re-estimated on {c['bn_samples']} images): test accuracy "
             f"{d['acc']:.4f}, {d['macs']:,} MACs, {d['params']:,} params. Each row: `prune_channels(dense, macs={c['macs']}, "
             f"min_channels=4)` from that same model; the data scorers read {c['score_samples']} training images; BN = BatchNorm "
             f"statistics re-estimated on {c['bn_samples']} training images; "
             + (f"fine-tuned = then {c['ft_epochs']} epoch(s) on {c['ft_samples']} training images (Adam 1e-3, cosine decay, batch 128). "
                if tuned else "no fine-tuning in this run. ")
             + f"Accuracy on the first {c['eval_samples']} test images. One seed"
             + (" and a very short fine-tune: between fine-tuned rows, differences of several points can be noise (compare l1 and l2, two "
                "closely related magnitude scores)" if tuned else "")
             + f"; the BN column depends only on the plan (and the {c['bn_samples']} images).", "",
             "| allocation | scorer | MACs removed | params | one-shot acc | after BN re-estimation | fine-tuned |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in res["results"]:
        lines.append(f"| {r['allocation']} | {r['scorer']} | {r['achieved_macs_removed']:.3f} | {r['params']:,} | {f(r['acc_one_shot'])} | "
                     f"{f(r['acc_bn'])} | {f(r['acc_fine_tuned'])} |")
    notes = sorted({n for r in res["results"] for n in r["notes"] if "batches of" not in n})
    if notes:
        lines += ["", "Scorer notes: " + "; ".join(notes)]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "mnist", "mnist.npz"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "channel_scorers.json"))
    ap.add_argument("--macs", type=float, default=0.5)
    ap.add_argument("--scorers", default=",".join(SCORERS))
    ap.add_argument("--allocations", default="importance", help="comma list of importance, uniform, global")
    ap.add_argument("--ft-allocations", default="importance", help="allocations whose models are also fine-tuned")
    ap.add_argument("--train-epochs", type=int, default=1)
    ap.add_argument("--train-samples", type=int, default=8000, help="0: all 22,699")
    ap.add_argument("--eval-samples", type=int, default=2000, help="0: all 10,000")
    ap.add_argument("--score-samples", type=int, default=512, help="training images the data scorers read")
    ap.add_argument("--bn-samples", type=int, default=2048)
    ap.add_argument("--ft-epochs", type=int, default=1)
    ap.add_argument("--ft-samples", type=int, default=3000)
    ap.add_argument("--from-json", default=None, help="only rewrite the markdown of this earlier result")
    args = ap.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as fh:
            write_markdown(args.from_json, markdown(json.load(fh)))
        return 0
    res = run(args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=2, default=float)
    write_markdown(args.out, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
