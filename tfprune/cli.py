"""The ``tfprune`` console script."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from tfprune.files import save_model


def _data(args: argparse.Namespace, model) -> tuple:
    """``(train, test)`` data objects from ``--data`` (a .npz, an image folder or module:function); announced on stderr."""
    from tfprune.data import load_source

    shape = getattr(model, "input_shape", None)
    image_size = tuple(shape[1:3]) if isinstance(shape, tuple) and len(shape) == 4 else None
    train, test, desc = load_source(args.data, x_key=getattr(args, "x_key", None), y_key=getattr(args, "y_key", None), image_size=image_size)
    print(f"data: {desc}", file=sys.stderr)
    return train, test


def _arrays(data, n: int | None = None, labels: bool = True):
    from tfprune.data import take

    s = take(data, n, need_labels="this command" if labels else False)
    return (s.x, s.y) if labels else s.x


def _compile_for_accuracy(model) -> None:
    """Compile a logits classifier (Adam, sparse cross-entropy from logits, accuracy) so ``evaluate(...)[1]`` is its accuracy."""
    from tfprune._keras import keras
    from tfprune.training.finetune import adam_cosine

    model.compile(optimizer=adam_cosine(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])


def _cmd_demo(args: argparse.Namespace) -> int:
    from tfprune.demo import run_demo

    run_demo(args.data, args.out, args.sparsity, args.epochs, args.prune_epochs, allocation=args.allocation, plot=not args.no_plot)
    return 0


def _cmd_layers(args: argparse.Namespace) -> int:
    import tfprune

    print(tfprune.prunable_layers(tfprune.load_model(args.model, compile=False, unsafe=args.unsafe)).table())
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import tfprune

    model = tfprune.load_model(args.model, compile=False, unsafe=args.unsafe)
    sample = rep = None
    if args.data:
        train, test = _data(args, model)
        sample, rep = test, _arrays(train, 500, labels=False)
    report = tfprune.export_tflite(model, args.out, mode=args.mode, sample_inputs=sample, representative_data=rep, c_header=args.c_header)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    import tfprune

    model = tfprune.load_model(args.model, compile=False, unsafe=args.unsafe)
    data = None
    if args.data:
        data = _data(args, model)[1]
    report = tfprune.analyze(model, data, sparsity=args.sparsity, importance=args.importance, allocation=args.allocation, delta=args.delta)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    if args.plot:
        print(f"plot: {report.plot(args.plot)}")
    return 0


def _cmd_obs(args: argparse.Namespace) -> int:
    import tfprune
    from tfprune.obs.hessian import supported

    model = tfprune.load_model(args.model, compile=False, unsafe=args.unsafe)
    train, test = _data(args, model)
    names = [layer.name for layer in model.layers if supported(layer)]
    targets = tolerance = None
    if args.keep:
        keep = [float(v) for v in args.keep.split(",")]
        if len(keep) != len(names):
            raise ValueError(f"--keep has {len(keep)} values but the model has {len(names)} OBS layers {names}")
        targets = {n: 1.0 - k for n, k in zip(names, keep)}
    elif args.tolerance is not None:
        tolerance = args.tolerance
    elif args.sparsity is None:
        raise ValueError("give --keep (fraction kept per layer), --sparsity (a total, planned with --importance/--allocation), or --tolerance")
    pruned, report = tfprune.obs.prune(
        model, train, sparsity=None if (targets or tolerance is not None) else args.sparsity, targets=targets, tolerance=tolerance,
        solver=args.solver, importance=args.importance, allocation=args.allocation, n_samples=args.n_samples,
    )
    if args.retrain:
        pruned = tfprune.training.finetune.retrain(pruned, train, steps=args.retrain)
    print(report.table())
    _compile_for_accuracy(pruned)
    print(f"test accuracy: {pruned.evaluate(*_arrays(test), verbose=0)[1]:.4f}")
    save_model(pruned, args.out)
    print(f"saved {args.out}")
    return 0


def _cmd_shallow(args: argparse.Namespace) -> int:
    import tfprune

    model = tfprune.load_model(args.model, compile=False, unsafe=args.unsafe)
    train, test = _data(args, model)
    x_train, y_train = _arrays(train)
    x_test, y_test = _arrays(test)
    kw = {"tau": args.tau} if args.target_flops is None else {"target_flops_reduction": args.target_flops}
    student, result = tfprune.shallow.shallow(model, (x_train[: args.n_samples], y_train[: args.n_samples]), pooling=args.pooling, **kw)
    print(result.table())
    if args.distill_epochs:
        distiller = tfprune.Distiller(model, student, temperature=args.temperature, alpha=args.alpha)
        steps = args.distill_epochs * -(-len(x_train) // 128)
        distiller.compile(optimizer=tfprune.training.finetune.adam_cosine(1e-3, decay_steps=steps))  # cosine decay to 0 over the fine-tuning
        distiller.fit(x_train, y_train, epochs=args.distill_epochs, batch_size=128, verbose=2)
    _compile_for_accuracy(student)
    print(f"test accuracy: {student.evaluate(x_test, y_test, verbose=0)[1]:.4f}")
    if args.plot:
        print(f"plot: {result.probes.plot(args.plot, set(result.removed))}")
    save_model(student, args.out)
    print(f"saved {args.out}")
    return 0


def _cmd_channels(args: argparse.Namespace) -> int:
    import tfprune
    from tfprune.structured.prune import prune_channels

    model = tfprune.load_model(args.model, unsafe=args.unsafe)
    data = eval_data = None
    if args.data:
        data, eval_data = _data(args, model)
    elif args.finetune_epochs or args.gradual_epochs:
        flag = "--gradual-epochs" if args.gradual_epochs else "--finetune-epochs"
        raise ValueError(f"{flag} {args.gradual_epochs or args.finetune_epochs} needs --data (labelled training data)")
    macs = 0.5 if args.macs is None and args.params is None else args.macs
    kw = dict(eval_data=eval_data, finetune_epochs=args.finetune_epochs, batch_size=args.batch_size, learning_rate=args.lr,
              importance=args.importance, allocation=args.allocation, layer_importance=args.layer_importance,
              min_channels=args.min_channels, include_outputs=args.include_outputs,
              verbose=2 if args.finetune_epochs or args.gradual_epochs else 0)
    import contextlib

    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():  # --json: stdout holds the JSON only
        if args.gradual_epochs:
            from tfprune.structured.gradual import prune_channels_gradually

            small, report = prune_channels_gradually(model, macs, args.params, data=data, epochs=args.gradual_epochs, **kw)
        else:
            small, report = prune_channels(model, macs, args.params, data=data, **kw)
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else report.table())
    if args.out:
        save_model(small, args.out)
        print(f"saved {args.out}")
    return 0


def _model_command(sub, name: str, help: str, func, data_help: str | None = None, data_required: bool = False) -> argparse.ArgumentParser:
    """A subcommand taking a saved model (and optionally ``--data`` mnist.npz)."""
    c = sub.add_parser(name, help=help)
    c.add_argument("model")
    c.add_argument("--unsafe", action="store_true", help="allow a model file whose Lambda layers hold Python code (loading runs it): "
                   "only for files you trust")
    if data_help is not None:
        c.add_argument("--data", required=data_required, help=data_help + " — any .npz (keras layout, x/y, or --x-key/--y-key), "
                       "an image folder (one sub-folder per class), or module:function returning a tf.data dataset")
        c.add_argument("--x-key", default=None, help="inputs array name in a .npz --data")
        c.add_argument("--y-key", default=None, help="labels array name in a .npz --data")
    c.set_defaults(func=func)
    return c


def _plan_options(c: argparse.ArgumentParser, granularity: bool = False) -> None:
    """The plan's options, with the defaults every entry point shares (tfprune.plan)."""
    from tfprune.planning import DEFAULT_ALLOCATION, DEFAULT_IMPORTANCE

    if granularity:  # the defaults depend on the granularity (tfprune.planning.default_methods)
        c.add_argument("--importance", default=None, help=f"importance scorer (default {DEFAULT_IMPORTANCE}; l2 under channel)")
        c.add_argument("--allocation", default=None, help=f"allocator (default {DEFAULT_ALLOCATION}; uniform under channel)")
    else:
        c.add_argument("--importance", default=DEFAULT_IMPORTANCE, help=f"layer importance scorer (default {DEFAULT_IMPORTANCE})")
        c.add_argument("--allocation", default=DEFAULT_ALLOCATION, help=f"allocator (default {DEFAULT_ALLOCATION})")
    if granularity:
        c.add_argument("--granularity", default="unstructured", help="unstructured, block, channel or N:M such as 2:4")
        c.add_argument("--include-outputs", action="store_true", help="under channel, also prune the layers that produce the outputs")


def _cmd_plan(args: argparse.Namespace) -> int:
    import tfprune

    model = tfprune.load_model(args.model, compile=False, unsafe=args.unsafe)
    data = None
    if args.data:
        data = _data(args, model)[1]
    budget = {"sparsity": args.sparsity, "macs": args.macs, "params": args.params}
    if all(v is None for v in budget.values()):  # the defaults: 90% of the weights, or half of the MACs for channel groups
        channel = tfprune.masks.granularity.parse_granularity(args.granularity).kind == "channel"
        budget["macs" if channel else "sparsity"] = 0.5 if channel else 0.9
    p = tfprune.plan(model, budget["sparsity"], macs=budget["macs"], params=budget["params"], importance=args.importance,
                     allocation=args.allocation, granularity=args.granularity, include_outputs=args.include_outputs, data=data)
    print(json.dumps(p.to_dict(), indent=2) if args.json else p.table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from tfprune.obs.pruning import DEFAULT_SOLVER

    p = argparse.ArgumentParser(prog="tfprune", description="Importance-based layer-wise pruning for tf-keras models.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="train LeNet-5 on MNIST, prune, fine-tune, export TFLite, print a table")
    d.add_argument("--data", help="path to mnist.npz (keras layout); else $TFPRUNE_MNIST, download, or the MNIST subset shipped with tfprune (announced)")
    d.add_argument("--out", default="out", help="output folder (default: out)")
    d.add_argument("--sparsity", type=float, default=0.9, help="total fraction of weights removed (default 0.9)")
    d.add_argument("--epochs", type=int, default=3, help="dense training epochs")
    d.add_argument("--prune-epochs", type=int, default=3, help="pruning + fine-tuning epochs")
    d.add_argument("--allocation", default=None, help="allocator (default: best available)")
    d.add_argument("--no-plot", action="store_true")
    d.set_defaults(func=_cmd_demo)

    pl = _model_command(sub, "plan", "per-layer targets for one total sparsity (the plan the callback would make)", _cmd_plan,
                        "mnist.npz for data-driven scorers")
    pl.add_argument("--sparsity", type=float, default=None, help="total fraction of prunable weights removed (default 0.9)")
    pl.add_argument("--macs", type=float, default=None, help="fraction of MACs removed (channel groups; default 0.5 under channel)")
    pl.add_argument("--params", type=float, default=None, help="fraction of parameters removed")
    _plan_options(pl, granularity=True)

    pl.add_argument("--json", action="store_true")

    _model_command(sub, "layers", "list a saved model's prunable layers and why others are skipped", _cmd_layers)

    e = _model_command(sub, "export", "export a saved model to a verified .tflite", _cmd_export,
                       "mnist.npz for parity/calibration (else random inputs; int8 needs data)")
    e.add_argument("--out", required=True)
    e.add_argument("--mode", default="sparse", choices=["float", "sparse", "dynamic", "int8", "micro"],
                   help="micro: int8, dense encoding, runs on TFLite Micro (needs --data for calibration)")
    e.add_argument("--c-header", default=None)
    e.add_argument("--json", action="store_true")
    a = _model_command(sub, "analyze", "per-layer importance, allocation, one-shot damage, most compact layer", _cmd_analyze,
                       "mnist.npz (keras layout) for the one-shot columns")
    a.add_argument("--sparsity", type=float, default=0.9, help="total sparsity to allocate")
    _plan_options(a)
    a.add_argument("--delta", type=float, default=0.01, help="accuracy drop tolerated by the compactness search")
    a.add_argument("--plot", default=None, help="save a plot here")
    a.add_argument("--json", action="store_true")
    o = _model_command(sub, "obs", "Layer-wise OBS: second-order pruning with weight correction", _cmd_obs,
                       "mnist.npz (keras layout): train split calibrates, test split evaluates", data_required=True)
    o.add_argument("--keep", help="fraction kept per OBS layer in model order, e.g. 0.05,0.2,0.7")
    o.add_argument("--sparsity", type=float, help="total sparsity, planned with --importance/--allocation (instead of --keep)")
    _plan_options(o)
    o.add_argument("--tolerance", type=float, help="per-layer delta E tolerance (instead of targets)")
    o.add_argument("--solver", "--method", dest="solver", default=DEFAULT_SOLVER, choices=["lobs", "exact", "magnitude"],
                   help=f"OBS solver (default {DEFAULT_SOLVER}, as tfprune.obs.prune)")
    o.add_argument("--n-samples", type=int, default=10000)
    o.add_argument("--retrain", type=int, default=0, help="light retraining steps that keep the zeros")
    o.add_argument("--out", required=True)
    sh = _model_command(sub, "shallow", "remove whole layers whose linear-probe gain is below tau, then distil", _cmd_shallow,
                        "mnist.npz (keras layout)", data_required=True)
    sh.add_argument("--tau", type=float, default=0.005, help="minimum probe-accuracy gain to keep a unit (fraction: 0.005 = half a point)")
    sh.add_argument("--target-flops", type=float, default=None, help="instead of --tau: the FLOPs fraction to remove")
    sh.add_argument("--pooling", default="avg", choices=["avg", "max", "flatten"])
    sh.add_argument("--n-samples", type=int, default=10000, help="samples for the probes (half train, half held out)")
    sh.add_argument("--distill-epochs", type=int, default=0, help="epochs of distillation from MODEL (Adam 1e-3, cosine decay, batch 128)")
    sh.add_argument("--temperature", type=float, default=4.0)
    sh.add_argument("--alpha", type=float, default=0.9)
    sh.add_argument("--plot", default=None)
    sh.add_argument("--out", required=True)
    ch = _model_command(sub, "channels", "remove whole channels for real (structured) to a MACs/params target, fine-tune, print the per-group table",
                        _cmd_channels, "labelled data: train split fine-tunes, test split evaluates")
    ch.add_argument("--macs", type=float, default=None, help="fraction of MACs removed (default 0.5 unless --params)")
    ch.add_argument("--params", type=float, default=None, help="instead of --macs: fraction of parameters removed")
    ch.add_argument("--allocation", default="uniform", choices=["uniform", "importance", "global_ratio", "global", "lamp"],
                    help="channels per group: uniform (default: best measured, see benchmarks/results/README.md), importance (How Compact?), "
                    "global_ratio (one threshold on scores over their group's largest), global (raw scores), lamp")
    ch.add_argument("--importance", default="l2", help="channel score within a group: l2, l1, bn_scale, or with --data taylor, obs")
    ch.add_argument("--layer-importance", default="capacity",
                    help="layer scorer giving each group its importance (allocation importance); capacity_activation reads --data")
    ch.add_argument("--min-channels", type=int, default=1, help="channels every group keeps at least")
    ch.add_argument("--include-outputs", action="store_true", help="also remove channels of the model's outputs")
    ch.add_argument("--finetune-epochs", type=int, default=0)
    ch.add_argument("--gradual-epochs", type=int, default=0, help="instead of one-shot: mask channel groups gradually during this many "
                    "epochs of training on --data (tfprune.Pruning over channel groups), then shrink (then --finetune-epochs on the small model)")
    ch.add_argument("--batch-size", type=int, default=128)
    ch.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (Adam, cosine decay to 0)")
    ch.add_argument("--out", default=None, help="save the small model here (.keras)")
    ch.add_argument("--json", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError) as err:  # user input: a bad value, a missing/damaged file, an unwritable --out
        print(f"tfprune {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
