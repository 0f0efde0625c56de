"""The ``tfprune`` console script.

Errors caused by what the user typed or gave (a bad option value, a missing,
damaged or wrong-format model file, ``--data`` that cannot be read or does not
fit the model, an output path that cannot be written) end the command with ONE
line on stderr that names the option or argument and the fix, and exit status 2.
Option values are checked when the command line is parsed and before any model
is loaded or trained. ``--debug`` prints the full traceback as well.
"""

from __future__ import annotations

import argparse
import collections.abc
import json
import math
import os
import re
import sys
from typing import Any, Callable, Sequence

from tfprune.files import save_model


class CLIError(Exception):
    """A problem with the command line's input: reported as one line (``tfprune CMD: error: ...``), exit status 2."""

    def __init__(self, message: str, prog: str | None = None) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block), raised as `CLIError` so `main` returns 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        fix = "" if "Fix:" in message else f". Fix: see `{self.prog} --help`"
        raise CLIError(message + fix, prog=self.prog)


# --------------------------------------------------------------- option types
def _option_type(desc: str, fix: str, convert: Callable[[str], Any], ok: Callable[[Any], bool], name: str) -> Callable[[str], Any]:
    """An argparse ``type=``: ``convert(text)`` accepted when ``ok``; else argparse reports ``argument --opt: 'text' is not DESC. Fix: FIX``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except (ValueError, OverflowError, TypeError):
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {desc}. Fix: {fix}")
        return value

    parse.__name__ = name
    return parse


def _fraction(what: str, example: str, closed: bool = False) -> Callable[[str], float]:
    """A finite float in [0, 1) (``closed``: [0, 1])."""
    return _option_type(f"a fraction in [0, 1{']' if closed else ')'} ({what})", f"give e.g. {example}", float,
                        lambda v: math.isfinite(v) and 0.0 <= v and (v <= 1.0 if closed else v < 1.0), "fraction")


def _real(what: str, example: str, positive: bool) -> Callable[[str], float]:
    """A finite float > 0 (``positive``) or >= 0."""
    return _option_type(f"a finite number {'> 0' if positive else '>= 0'} ({what})", f"give e.g. {example}", float,
                        lambda v: math.isfinite(v) and (v > 0 if positive else v >= 0), "number")


def _count(minimum: int, what: str, example: str) -> Callable[[str], int]:
    """A whole number >= ``minimum``."""
    return _option_type(f"a whole number >= {minimum} ({what})", f"give e.g. {example}", int, lambda v: v >= minimum, "count")


def _latency(text: str) -> float | str:
    """``--latency``: a ratio of the dense model's latency in (0, 1], or milliseconds such as ``3.5ms``."""
    from tfprune.latency import parse_latency

    value: float | str = text if text.strip().lower().endswith("ms") else _option_type(
        "a ratio in (0, 1] of the dense model's latency, or milliseconds such as 3.5ms", "give e.g. 0.5 or 3.5ms", float,
        lambda v: math.isfinite(v), "latency")(text)
    try:
        parse_latency(value)
    except (ValueError, TypeError) as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a ratio in (0, 1] of the dense model's latency, or milliseconds such as "
                                         "3.5ms. Fix: give e.g. 0.5 or 3.5ms") from err
    return value


def _size(text: str) -> int:
    """``--size``: the most bytes the written file may have: a number of bytes or e.g. ``400KB``, ``1.5MB``."""
    from tfprune.latency import parse_size

    try:
        value = parse_size(text)
    except (ValueError, TypeError) as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size in bytes. Fix: give a number of bytes or e.g. 400KB or 1.5MB") from err
    return int(value)  # type: ignore[arg-type]  # a string never parses to None


def _keep(text: str) -> list[float]:
    """``--keep``: comma-separated fractions kept per OBS layer, each in (0, 1]."""
    values = []
    for part in text.split(","):
        try:
            v = float(part)
        except ValueError:
            v = math.nan
        if not (math.isfinite(v) and 0.0 < v <= 1.0):
            raise argparse.ArgumentTypeError(f"{part.strip()!r} in {text!r} is not a fraction kept in (0, 1] (one per OBS layer, in "
                                             "model order; 1 keeps the layer whole, 0 would remove every weight). "
                                             "Fix: give e.g. --keep 0.05,0.2,0.7")
        values.append(v)
    return values


def _granularity(text: str) -> str:
    from tfprune.masks.granularity import parse_granularity

    try:
        parse_granularity(text)
    except (ValueError, TypeError) as err:
        raise argparse.ArgumentTypeError(f"{_fold(err)} Fix: give e.g. --granularity channel or --granularity 2:4") from None
    return text


# ------------------------------------------------------------ error messages
def _fold(err: BaseException | str, limit: int | None = None) -> str:
    """An exception's message on one line (TensorFlow's op and graph noise dropped), at most ``limit`` characters."""
    if isinstance(err, KeyError) and len(err.args) == 1:
        text = str(err.args[0])
    elif isinstance(err, BaseException) and hasattr(err, "message") and type(err).__module__.startswith("tensorflow"):
        lines = [ln for ln in str(err.message).splitlines()
                 if ln.strip() and not ln.startswith((" ", "\t")) and not ln.startswith(("Graph execution error", "Detected at node"))]
        text = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\]( name:?)?|\[\[.*?\]\]", "", " ".join(lines))
    else:
        text = str(err)
    text = " ".join(text.split()) or (type(err).__name__ if isinstance(err, BaseException) else "")
    if limit is not None and len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


def _with_fix(message: str, fix: str) -> str:
    message = message.rstrip()
    if "Fix:" in message:
        return message
    return f"{message}{'' if message.endswith('.') else '.'} Fix: {fix}"


DATA_FIX = ("give a .npz of arrays (keras layout, x/y, or --x-key/--y-key), an image folder (one sub-folder per class), "
            "or module:function returning a tf.data dataset or (x, y) arrays")
MODEL_FIX = "pass the file model.save() wrote (.keras or .h5) or a SavedModel folder; --debug shows the traceback"


# ------------------------------------------------------------- model and data
def _load(args: argparse.Namespace, **kwargs: Any) -> Any:
    """``tfprune.load_model(MODEL)``; any failure is a one-line error naming MODEL (the file is the user's input)."""
    import tfprune

    try:
        model = tfprune.load_model(args.model, unsafe=args.unsafe, **kwargs)
        if _is_keras3(model):  # every command runs on its tf-keras twin; --out files are written back as Keras 3
            from tfprune.keras3.convert import to_tf_keras

            args.keras3_source = True
            print(f"model: {args.model} is a Keras 3 model, processed as its tf-keras twin (the same layers and weights); files written "
                  "with --out are Keras 3 again", file=sys.stderr)
            return to_tf_keras(tfprune.strip(model) if tfprune.masks.wrapping.is_wrapped(model) else model)
        return model
    except Exception as err:  # noqa: BLE001 - whatever a damaged or foreign file makes h5py / zipfile / Keras raise
        if isinstance(err, (ValueError, OSError)) and "Fix:" in str(err):
            raise CLIError(f"MODEL: {_fold(err)}") from err
        raise CLIError(f"MODEL {args.model!r} cannot be loaded ({type(err).__name__}: {_fold(err, 300)}): it is damaged, truncated, "
                       f"or not a tf-keras model. Fix: {MODEL_FIX}") from err


def _is_keras3(model: Any) -> bool:
    from tfprune._keras import is_keras3_object

    return is_keras3_object(model)


def _save(args: argparse.Namespace, model: Any) -> None:
    """Write ``model`` to ``--out`` (as Keras 3 when MODEL was a Keras 3 file)."""
    if getattr(args, "keras3_source", False):
        from tfprune.keras3.convert import to_keras3

        model = to_keras3(model)
    save_model(model, args.out)


def _data(args: argparse.Namespace, model, labels: bool = False) -> tuple:
    """``(train, test)`` data objects from ``--data`` (a .npz, an image folder or module:function), checked against ``model``; announced on stderr.

    ``labels``: the command needs integer class labels (checked against the model's outputs).
    """
    from tfprune.data import load_source

    shape = getattr(model, "input_shape", None)
    image_size = tuple(shape[1:3]) if isinstance(shape, tuple) and len(shape) == 4 else None
    try:
        train, test, desc = load_source(args.data, x_key=getattr(args, "x_key", None), y_key=getattr(args, "y_key", None),
                                        image_size=image_size)
    except Exception as err:  # noqa: BLE001 - a damaged .npz, an unreadable folder, the user's function: all about --data
        if isinstance(err, (ValueError, FileNotFoundError)):  # load_source's own messages (and Keras' for an image folder)
            text = _fold(err)
            if "--data" not in text:
                text = f"--data {text}" if text.startswith(args.data) else f"--data {args.data!r}: {text}"
            raise CLIError(_with_fix(text, DATA_FIX)) from err
        raise CLIError(f"--data {args.data!r} cannot be read ({type(err).__name__}: {_fold(err, 300)}). Fix: {DATA_FIX}") from err
    for part in (train,) if test is train else (train, test):
        _check_fits(args.data, model, part, labels)
    print(f"data: {desc}", file=sys.stderr)
    return train, test


def _check_fits(spec: str, model: Any, data: Any, labels: bool) -> None:
    """CLIError naming ``--data`` unless its first samples are inputs ``model`` takes (and, with ``labels``, class labels it outputs)."""
    import numpy as np

    from tfprune.data import take

    if isinstance(data, collections.abc.Iterator):
        return  # a generator or other one-shot iterator: peeking would consume it
    try:
        s = take(data, 8)
    except Exception as err:  # noqa: BLE001 - the user's data object
        raise CLIError(f"--data {spec!r} cannot be read as data ({type(err).__name__}: {_fold(err, 300)}). Fix: {DATA_FIX}") from err
    if len(getattr(model, "inputs", None) or []) == 1 and isinstance(s.x, np.ndarray):
        want = tuple(model.inputs[0].shape)[1:]
        got = s.x.shape[1:]
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            need = "(" + ", ".join("any" if w is None else str(w) for w in want) + ("," if len(want) == 1 else "") + ")"
            raise CLIError(f"--data {spec!r}: each sample has shape {got}, but MODEL takes inputs of shape {need}. Fix: give data "
                           "shaped for this model (with a .npz, --x-key names the inputs array)")
        if not (np.issubdtype(s.x.dtype, np.number) or s.x.dtype == bool):
            raise CLIError(f"--data {spec!r}: the inputs are {s.x.dtype}, not numbers. Fix: give numeric arrays")
    else:
        try:
            model(s.x, training=False)
        except Exception as err:  # noqa: BLE001 - Keras' shape / structure errors for multi-input models
            raise CLIError(f"--data {spec!r}: MODEL cannot run on its inputs ({_fold(err, 300)}). Fix: give inputs shaped "
                           "for this model (a dict keyed by input name, or a tuple in input order)") from err
    if not labels:
        return
    if s.y is None:
        raise CLIError(f"--data {spec!r} has inputs but no labels, and this command needs (x, y). Fix: give labels (--y-key NAME "
                       "for a .npz; (x, y) batches from module:function)")
    outputs = getattr(model, "outputs", None) or []
    n_classes = outputs[0].shape[-1] if len(outputs) == 1 and outputs[0].shape.rank == 2 else None
    if isinstance(s.y, np.ndarray) and np.issubdtype(s.y.dtype, np.integer) and s.y.ndim == 1 and n_classes and n_classes > 1:
        y = data[1] if isinstance(data, tuple) and len(data) >= 2 and isinstance(data[1], np.ndarray) else s.y  # arrays: every label
        lo, hi = int(np.min(y)), int(np.max(y))
        if lo < 0 or hi >= n_classes:
            raise CLIError(f"--data {spec!r}: labels run from {lo} to {hi}, but MODEL has {n_classes} outputs (classes 0 to "
                           f"{n_classes - 1}). Fix: give class indices 0..{n_classes - 1} (with a .npz, --y-key names the labels array)")


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

    print(tfprune.prunable_layers(_load(args, compile=False)).table())
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import tfprune

    model = _load(args, compile=False)
    sample = rep = None
    if args.data:
        train, test = _data(args, model)
        sample, rep = test, _arrays(train, 500, labels=False)
    report = tfprune.export_tflite(model, args.out, mode=args.mode, sample_inputs=sample, representative_data=rep, c_header=args.c_header)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    import tfprune

    model = _load(args, compile=False)
    data = None
    if args.data:
        data = _data(args, model, labels=True)[1]
    report = tfprune.analyze(model, data, sparsity=args.sparsity, importance=args.importance, allocation=args.allocation, delta=args.delta)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    if args.plot:
        print(f"plot: {report.plot(args.plot)}")
    return 0


def _cmd_obs(args: argparse.Namespace) -> int:
    import tfprune
    from tfprune.obs.hessian import supported

    model = _load(args, compile=False)
    names = [layer.name for layer in model.layers if supported(layer)]
    targets = tolerance = None
    if args.keep:
        if len(args.keep) != len(names):
            raise CLIError(f"--keep has {len(args.keep)} values but MODEL has {len(names)} OBS layers {names}. Fix: give one fraction "
                           f"kept per layer, in that order (e.g. --keep {','.join(['0.5'] * len(names))})")
        targets = {n: 1.0 - k for n, k in zip(names, args.keep)}
    elif args.tolerance is not None:
        tolerance = args.tolerance
    train, test = _data(args, model, labels=True)
    pruned, report = tfprune.obs.prune(
        model, train, sparsity=None if (targets or tolerance is not None) else args.sparsity, targets=targets, tolerance=tolerance,
        solver=args.solver, importance=args.importance, allocation=args.allocation, n_samples=args.n_samples,
    )
    if args.retrain:
        pruned = tfprune.training.finetune.retrain(pruned, train, steps=args.retrain)
    print(report.table())
    _compile_for_accuracy(pruned)
    print(f"test accuracy: {pruned.evaluate(*_arrays(test), verbose=0)[1]:.4f}")
    _save(args, pruned)
    print(f"saved {args.out}")
    return 0


def _cmd_shallow(args: argparse.Namespace) -> int:
    import tfprune

    model = _load(args, compile=False)
    train, test = _data(args, model, labels=True)
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
    _save(args, student)
    print(f"saved {args.out}")
    return 0


def _cmd_channels(args: argparse.Namespace) -> int:
    from tfprune.structured.prune import prune_channels

    model = _load(args)
    data = eval_data = None
    if args.data:
        data, eval_data = _data(args, model, labels=bool(args.finetune_epochs or args.gradual_epochs))
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
        _save(args, small)
        print(f"saved {args.out}")
    return 0


def _cmd_compress(args: argparse.Namespace) -> int:
    import contextlib

    from tfprune.latency import LatencyTable, compress, macs_table

    model = _load(args, compile=False)
    train, test = _data(args, model, labels=True)
    table = None
    if args.device_table == "macs":
        table = macs_table(model)
    elif args.device_table:
        try:
            table = LatencyTable.load(args.device_table)
        except (OSError, ValueError) as err:
            raise CLIError(_with_fix(f"--device-table {args.device_table!r}: {_fold(err, 300)}",
                                     "give a table written by tfprune.latency.LatencyTable.save (docs/guide/latency.md)")) from err
    if hasattr(train, "x") or isinstance(train, (tuple, list)):  # arrays; one split given (test is train): compress keeps 10% back
        data, validation = _arrays(train), (None if test is train else _arrays(test, 5000))
    else:  # a tf.data dataset: validation from the test split's first 5,000 examples
        data, validation = train, _arrays(test, 5000)
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        result = compress(model, data, latency=args.latency, max_accuracy_drop=args.max_drop, size=args.size, validation=validation, table=table,
                          threads=args.threads, iterations=args.iterations, max_step_drop=args.max_step_drop,
                          finetune_steps=args.finetune_steps, final_steps=args.final_steps,
                          batch_size=args.batch_size, learning_rate=args.lr, time_budget=args.time_budget, state_dir=args.state,
                          out=args.out, quantize=args.quantize, seed=args.seed, verbose=0 if args.quiet else 1)
    if args.plot:
        result.plot(args.plot)
    if args.save_model:
        _save(argparse.Namespace(**{**vars(args), "out": args.save_model}), result.model)
    print(json.dumps(result.to_dict(), indent=2, default=str) if args.json else result.table())
    return 0


DEBUG_HELP = "on an error, also print the full traceback (default: one line naming the problem and the fix)"


def _subcommand(sub, name: str, help: str) -> argparse.ArgumentParser:
    c = sub.add_parser(name, help=help)
    c.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)  # also after the command
    return c


def _model_command(sub, name: str, help: str, func, data_help: str | None = None, data_required: bool = False) -> argparse.ArgumentParser:
    """A subcommand taking a saved model (and optionally ``--data`` mnist.npz)."""
    c = _subcommand(sub, name, help)
    c.add_argument("model", metavar="MODEL", help="a .keras or .h5 file, or a SavedModel folder")
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
        c.add_argument("--granularity", default="unstructured", type=_granularity, help="unstructured, block, channel or N:M such as 2:4")
        c.add_argument("--include-outputs", action="store_true", help="under channel, also prune the layers that produce the outputs")


def _cmd_plan(args: argparse.Namespace) -> int:
    import tfprune

    model = _load(args, compile=False)
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

    removed = _fraction("the fraction removed of the weights", "0.9")
    p = _Parser(prog="tfprune", description="Importance-based layer-wise pruning for tf-keras models.")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = p.add_subparsers(dest="command", required=True)

    d = _subcommand(sub, "demo", "train LeNet-5 on MNIST, prune, fine-tune, export TFLite, print a table")
    d.add_argument("--data", help="path to mnist.npz (keras layout); else $TFPRUNE_MNIST, download, or the MNIST subset shipped with tfprune (announced)")
    d.add_argument("--out", default="out", help="output folder (default: out)")
    d.add_argument("--sparsity", type=removed, default=0.9, help="total fraction of weights removed (default 0.9)")
    d.add_argument("--epochs", type=_count(1, "epochs of dense training", "3"), default=3, help="dense training epochs")
    d.add_argument("--prune-epochs", type=_count(1, "epochs of pruning and fine-tuning", "3"), default=3, help="pruning + fine-tuning epochs")
    d.add_argument("--allocation", default=None, help="allocator (default: best available)")
    d.add_argument("--no-plot", action="store_true")
    d.set_defaults(func=_cmd_demo)

    pl = _model_command(sub, "plan", "per-layer targets for one total sparsity (the plan the callback would make)", _cmd_plan,
                        "mnist.npz for data-driven scorers")
    pl.add_argument("--sparsity", type=removed, default=None, help="total fraction of prunable weights removed (default 0.9)")
    pl.add_argument("--macs", type=_fraction("the fraction removed of the MACs", "0.5"), default=None,
                    help="fraction of MACs removed (channel groups; default 0.5 under channel)")
    pl.add_argument("--params", type=_fraction("the fraction removed of the parameters", "0.5"), default=None, help="fraction of parameters removed")
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
    a.add_argument("--sparsity", type=removed, default=0.9, help="total sparsity to allocate")
    _plan_options(a)
    a.add_argument("--delta", type=_fraction("the accuracy drop tolerated, absolute: 0.01 = one point", "0.01"), default=0.01,
                   help="accuracy drop tolerated by the compactness search")
    a.add_argument("--plot", default=None, help="save a plot here (.png, .pdf, .svg...)")
    a.add_argument("--json", action="store_true")
    o = _model_command(sub, "obs", "Layer-wise OBS: second-order pruning with weight correction", _cmd_obs,
                       "mnist.npz (keras layout): train split calibrates, test split evaluates", data_required=True)
    o.add_argument("--keep", type=_keep, help="fraction kept per OBS layer in model order, e.g. 0.05,0.2,0.7")
    o.add_argument("--sparsity", type=removed, help="total sparsity, planned with --importance/--allocation (instead of --keep)")
    _plan_options(o)
    o.add_argument("--tolerance", type=_real("a per-layer delta E", "0.01", positive=False), help="per-layer delta E tolerance (instead of targets)")
    o.add_argument("--solver", "--method", dest="solver", default=DEFAULT_SOLVER, choices=["lobs", "exact", "magnitude"],
                   help=f"OBS solver (default {DEFAULT_SOLVER}, as tfprune.obs.prune)")
    o.add_argument("--n-samples", type=_count(1, "calibration samples", "10000"), default=10000,
                   help="calibration samples for the Hessians (default 10000)")
    o.add_argument("--retrain", type=_count(0, "retraining steps", "510"), default=0, help="light retraining steps that keep the zeros")
    o.add_argument("--out", required=True)
    sh = _model_command(sub, "shallow", "remove whole layers whose linear-probe gain is below tau, then distil", _cmd_shallow,
                        "mnist.npz (keras layout)", data_required=True)
    sh.add_argument("--tau", type=_real("a probe-accuracy gain: 0.005 = half a point", "0.005", positive=False), default=0.005,
                    help="minimum probe-accuracy gain to keep a unit (fraction: 0.005 = half a point)")
    sh.add_argument("--target-flops", type=_fraction("the fraction removed of the FLOPs", "0.3"), default=None,
                    help="instead of --tau: the FLOPs fraction to remove")
    sh.add_argument("--pooling", default="avg", choices=["avg", "max", "flatten"])
    sh.add_argument("--n-samples", type=_count(4, "probe samples, half train and half held out", "10000"), default=10000,
                    help="samples for the probes (half train, half held out)")
    sh.add_argument("--distill-epochs", type=_count(0, "distillation epochs", "2"), default=0,
                    help="epochs of distillation from MODEL (Adam 1e-3, cosine decay, batch 128)")
    sh.add_argument("--temperature", type=_real("a distillation temperature", "4", positive=True), default=4.0,
                    help="distillation temperature (default 4)")
    sh.add_argument("--alpha", type=_fraction("the weight of the distillation loss", "0.9", closed=True), default=0.9,
                    help="weight of the distillation loss, the rest on the labels (default 0.9)")
    sh.add_argument("--plot", default=None, help="save a plot of the probes here (.png, .pdf, .svg...)")
    sh.add_argument("--out", required=True)
    ch = _model_command(sub, "channels", "remove whole channels for real (structured) to a MACs/params target, fine-tune, print the per-group table",
                        _cmd_channels, "labelled data: train split fine-tunes, test split evaluates")
    ch.add_argument("--macs", type=_fraction("the fraction removed of the MACs", "0.5"), default=None,
                    help="fraction of MACs removed (default 0.5 unless --params)")
    ch.add_argument("--params", type=_fraction("the fraction removed of the parameters", "0.3"), default=None,
                    help="instead of --macs: fraction of parameters removed")
    ch.add_argument("--allocation", default="uniform", choices=["uniform", "importance", "global_ratio", "global", "lamp"],
                    help="channels per group: uniform (default: best measured, see benchmarks/results/README.md), importance (How Compact?), "
                    "global_ratio (one threshold on scores over their group's largest), global (raw scores), lamp")
    ch.add_argument("--importance", default="l2", help="channel score within a group: l2, l1, bn_scale, or with --data taylor, obs")
    ch.add_argument("--layer-importance", default="capacity",
                    help="layer scorer giving each group its importance (allocation importance); capacity_activation reads --data")
    ch.add_argument("--min-channels", type=_count(1, "channels every group keeps", "1"), default=1, help="channels every group keeps at least")
    ch.add_argument("--include-outputs", action="store_true", help="also remove channels of the model's outputs")
    ch.add_argument("--finetune-epochs", type=_count(0, "fine-tuning epochs", "2"), default=0, help="fine-tuning epochs on --data")
    ch.add_argument("--gradual-epochs", type=_count(0, "epochs of gradual masking", "3"), default=0,
                    help="instead of one-shot: mask channel groups gradually during this many "
                    "epochs of training on --data (tfprune.Pruning over channel groups), then shrink (then --finetune-epochs on the small model)")
    ch.add_argument("--batch-size", type=_count(1, "samples per batch", "128"), default=128)
    ch.add_argument("--lr", type=_real("a learning rate", "0.001", positive=True), default=1e-3, help="fine-tuning learning rate (Adam, cosine decay to 0)")
    ch.add_argument("--out", default=None, help="save the small model here (.keras)")
    ch.add_argument("--json", action="store_true")
    co = _model_command(sub, "compress", "search for the most accurate channel-pruned model under a measured latency budget "
                        "(NetAdapt-style, LiteRT timings of the model's own layers), fine-tune, export a verified .tflite",
                        _cmd_compress, "labelled data: train split fine-tunes, test split scores", data_required=True)
    co.add_argument("--latency", type=_latency, default=0.5, help="the budget: a ratio of the dense model's latency (default 0.5) or "
                    "milliseconds such as 3.5ms")
    co.add_argument("--max-drop", type=_fraction("accuracy the search may lose, 0.01 = one point", "0.01"), default=0.01,
                    help="accuracy the result may lose (reported as within or OVER)")
    co.add_argument("--out", required=True, help="the final .tflite (parity checked): int8 where it is no slower and as accurate, else float")
    co.add_argument("--size", type=_size, default=None, help="the most bytes the file may have (e.g. 400KB, 1.5MB): the search goes on "
                    "past the latency budget until the file fits")
    co.add_argument("--quantize", choices=("auto", "int8", "float"), default="auto",
                    help="the file's format: auto (default) keeps int8 when it is no slower than float and keeps the accuracy")
    co.add_argument("--device-table", default=None, help="a latency table measured elsewhere (JSON, tfprune.latency.LatencyTable.save), "
                    "or 'macs' (the MACs proxy: the same search on a MACs budget); default: time the model's layers on this machine")
    co.add_argument("--threads", type=_count(1, "interpreter threads", "1"), default=1, help="LiteRT threads to time with")
    co.add_argument("--iterations", type=_count(1, "search iterations", "8"), default=8)
    co.add_argument("--max-step-drop", type=_fraction("proxy accuracy one step may lose before it is halved, 0.05 = five points", "0.05", closed=True),
                    default=0.05, help="halve a step whose best cut loses more proxy accuracy than this (default 0.05); 1 keeps fixed steps")
    co.add_argument("--finetune-steps", type=_count(0, "fine-tuning steps per accepted step", "100"), default=100)
    co.add_argument("--final-steps", type=_count(0, "fine-tuning steps of the final model", "1000"), default=1000)
    co.add_argument("--batch-size", type=_count(1, "samples per batch", "64"), default=64)
    co.add_argument("--lr", type=_real("a learning rate", "0.0001", positive=True), default=1e-4, help="fine-tuning learning rate (Adam, cosine)")
    co.add_argument("--time-budget", type=_real("seconds the call may take", "3600", positive=True), default=3600.0,
                    help="seconds the whole call may take (table, search, final fine-tune, file): the search stops when its next "
                    "iteration and the final fine-tune would not fit; default 3600")
    co.add_argument("--state", default=None, help="a folder for the search's state: run the same command again to resume")
    co.add_argument("--seed", type=_count(0, "a seed", "0"), default=0)
    co.add_argument("--plot", default=None, help="plot accuracy vs latency of the search's path here (.png, .pdf, .svg...)")
    co.add_argument("--save-model", default=None, help="also save the final Keras model here (.keras)")
    co.add_argument("--quiet", action="store_true", help="no progress output")
    co.add_argument("--json", action="store_true")
    return p


# ------------------------------------------------------- checks before work
def _check_output(option: str, path: str, example: str, folder: bool = False, figure: bool = False, create: bool = False) -> None:
    """CLIError naming ``option`` unless ``path`` can be written: not a folder (``folder``: not a file), its folder there and writable."""
    target = os.path.abspath(path)
    if folder:
        if os.path.exists(target) and not os.path.isdir(target):
            raise CLIError(f"{option} {path!r} is a file, but it names the output folder. Fix: give a folder (created if missing), "
                           f"e.g. {option} {example}")
    elif os.path.isdir(target):
        raise CLIError(f"{option} {path!r} is a folder, but it names the file to write. Fix: give a file name, e.g. "
                       f"{option} {os.path.join(path, example)}")
    if figure:
        from matplotlib.backend_bases import FigureCanvasBase

        types = FigureCanvasBase.get_supported_filetypes()
        ext = os.path.splitext(path)[1].lstrip(".").lower()
        if ext not in types:
            raise CLIError(f"{option} {path!r}: the plot's format comes from the file extension, and {'.' + ext if ext else 'none'} "
                           f"is not one matplotlib writes ({', '.join('.' + t for t in sorted(types))}). Fix: e.g. {option} "
                           f"{os.path.splitext(path)[0] or 'plot'}.png")
    where = target if folder else os.path.dirname(target)
    if not (folder or create) and not os.path.isdir(where):
        raise CLIError(f"{option} {path!r}: the folder {where!r} does not exist. Fix: create it first (mkdir -p {where}) or give another path")
    while not os.path.exists(where):
        where = os.path.dirname(where)
    if not os.path.isdir(where):
        raise CLIError(f"{option} {path!r}: {where!r} is a file, not a folder. Fix: give another path")
    import tempfile

    try:  # what atomic writing does first: a temporary file next to the target
        fd, tmp = tempfile.mkstemp(prefix=".tfprune-write-check-", dir=where)
    except OSError as err:
        raise CLIError(f"{option} {path!r}: cannot write in the folder {where!r} ({err.strerror or _fold(err)}). Fix: give a path in a "
                       "writable folder, or make that folder writable") from err
    os.close(fd)
    os.remove(tmp)


def _check_data_spec(args: argparse.Namespace) -> None:
    """``--data`` names something that exists (a folder, a .npz file, or module:function); ``--x-key``/``--y-key`` go with a .npz."""
    spec = getattr(args, "data", None)
    x_key, y_key = getattr(args, "x_key", None), getattr(args, "y_key", None)
    if spec is None:
        if x_key is not None or y_key is not None:
            raise CLIError(f"{'--x-key' if x_key is not None else '--y-key'} names an array of a .npz --data, but no --data was given. "
                           "Fix: add --data FILE.npz, or drop it")
        return
    if os.path.isdir(spec):
        kind = "folder"
    elif os.path.isfile(spec):
        if not spec.endswith(".npz"):
            raise CLIError(f"--data {spec!r} is a file but not a .npz archive. Fix: save the arrays with np.savez(..., x=..., y=...), "
                           "or give an image folder or module:function")
        kind = "npz"
    elif ":" in spec and all(spec.partition(":")[::2]):
        kind = "function"
    else:
        raise CLIError(f"--data {spec!r}: no such file or folder, and not module:function. Fix: check the path; {DATA_FIX}")
    if kind != "npz" and (x_key is not None or y_key is not None):
        raise CLIError(f"{'--x-key' if x_key is not None else '--y-key'} names an array of a .npz file, but --data {spec!r} is a "
                       f"{'folder' if kind == 'folder' else 'module:function'}. Fix: drop it")
    if y_key is not None and x_key is None:
        raise CLIError(f"--y-key {y_key!r} needs --x-key (the inputs array). Fix: add --x-key NAME")


def _check_name(option: str, name: str, lookup: Callable[[str], Any]) -> None:
    try:
        lookup(name)
    except (ValueError, TypeError, KeyError) as err:
        raise CLIError(f"{option} {name!r}: {_fold(err)}. Fix: choose one of the names listed") from None


def _needs_data(args: argparse.Namespace, option: str, name: str, kind: str) -> None:
    from tfprune.importance import needs_data

    if needs_data(name, kind) and not args.data:
        raise CLIError(f"{option} {name!r} reads data, and no --data was given. Fix: add --data, or choose a data-free scorer "
                       f"(e.g. {option} {'capacity' if kind == 'layer' else 'l2'})")


def _check_plan_names(args: argparse.Namespace, channel: bool) -> None:
    """--importance and --allocation are registered names (of channel scorers / group allocators under channel groups)."""
    from tfprune.allocation import get_allocator, group_keys
    from tfprune.importance import get_scorer
    from tfprune.planning import default_methods

    kind = "channel" if channel else "layer"
    importance, allocation = (args.importance, args.allocation)
    defaults = default_methods("channel" if channel else "unstructured")
    importance = defaults[0] if importance is None else importance
    allocation = defaults[1] if allocation is None else allocation
    _check_name("--importance", importance, lambda n: get_scorer(n, kind))
    _check_name("--allocation", allocation, group_keys if channel else get_allocator)
    _needs_data(args, "--importance", importance, kind)


def _preflight(args: argparse.Namespace) -> None:
    """The options together, checked before any model is loaded or trained: CLIError naming the option and the fix."""
    cmd = args.command
    if cmd == "demo":
        _check_output("--out", args.out, "out", folder=True)
        if args.data is not None:
            _check_mnist(args.data)
        if args.allocation is not None:
            from tfprune.allocation import get_allocator

            _check_name("--allocation", args.allocation, get_allocator)
        return
    for option, attr, example, figure in (("--out", "out", "model.tflite" if cmd in ("export", "compress") else "model.keras", False),
                                          ("--c-header", "c_header", "model_data.h", False), ("--plot", "plot", "plot.png", True),
                                          ("--save-model", "save_model", "model.keras", False)):
        if getattr(args, attr, None) is not None:
            _check_output(option, getattr(args, attr), example, figure=figure, create=cmd in ("export", "compress") and attr == "out")
    if getattr(args, "device_table", None) not in (None, "macs") and not os.path.isfile(args.device_table):
        raise CLIError(f"--device-table {args.device_table!r}: no such file. Fix: give a table written by "
                       "tfprune.latency.LatencyTable.save, 'macs' for the MACs proxy, or drop --device-table to time this machine")
    _check_data_spec(args)
    if cmd == "plan":
        from tfprune.masks.granularity import parse_granularity

        g = parse_granularity(args.granularity)
        given = [f"--{k}" for k in ("sparsity", "macs", "params") if getattr(args, k) is not None]
        if len(given) > 1:
            raise CLIError(f"{' and '.join(given)} are each a budget; give one. Fix: drop all but one")
        if g.kind == "frozen":
            raise CLIError("--granularity frozen keeps existing masks and takes no plan. Fix: --granularity unstructured, block, "
                           "channel or N:M such as 2:4")
        if g.kind == "channel" and args.sparsity is not None:
            raise CLIError("--sparsity counts weights, but --granularity channel removes whole channels. Fix: --macs or --params")
        if g.kind != "channel" and args.macs is not None:
            raise CLIError(f"--macs needs physical removal, but --granularity {args.granularity} only zeroes weights. "
                           "Fix: --granularity channel with --macs, or --sparsity / --params")
        _check_plan_names(args, g.kind == "channel")
    elif cmd in ("analyze", "obs"):
        _check_plan_names(args, channel=False)
        if cmd == "obs":
            given = [k for k, v in (("--keep", args.keep), ("--sparsity", args.sparsity), ("--tolerance", args.tolerance)) if v is not None]
            if len(given) != 1:
                raise CLIError(("give one of " if not given else f"{' and '.join(given)} are alternatives; give one of ")
                               + "--keep (fraction kept per layer), --sparsity (a total, planned with --importance/--allocation) "
                               "or --tolerance (per-layer delta E). Fix: e.g. --sparsity 0.9")
    elif cmd == "export":
        from tfprune.export.convert import INTEGER_MODES, stores_sparse

        if args.mode in INTEGER_MODES and not args.data:
            raise CLIError(f"--mode {args.mode} needs --data: int8 conversion calibrates on real inputs. Fix: add --data (e.g. the "
                           "training set), or --mode float / sparse / dynamic")
        if args.c_header and stores_sparse(args.mode, True):
            raise CLIError(f"--c-header is for TensorFlow Lite Micro, which cannot run a --mode {args.mode} file (sparse tensors). "
                           "Fix: --mode micro (int8, needs --data) or --mode float")
    elif cmd == "channels":
        from tfprune.importance import get_scorer

        if args.macs is not None and args.params is not None:
            raise CLIError("--macs and --params are each a target; give one. Fix: drop one of them")
        if not args.data and (args.finetune_epochs or args.gradual_epochs):
            flag = "--gradual-epochs" if args.gradual_epochs else "--finetune-epochs"
            raise CLIError(f"{flag} {args.gradual_epochs or args.finetune_epochs} needs --data (labelled training data). "
                           f"Fix: add --data, or drop {flag}")
        _check_name("--importance", args.importance, lambda n: get_scorer(n, "channel"))
        _check_name("--layer-importance", args.layer_importance, lambda n: get_scorer(n, "layer"))
        _needs_data(args, "--importance", args.importance, "channel")
        if args.allocation == "importance":
            _needs_data(args, "--layer-importance", args.layer_importance, "layer")


def _check_mnist(path: str) -> None:
    """demo's --data: an existing .npz in keras' mnist layout."""
    import numpy as np

    if not os.path.isfile(path):
        raise CLIError(f"--data {path!r}: no such file. Fix: give mnist.npz (keras layout), or leave --data out to use "
                       "$TFPRUNE_MNIST, the download or the MNIST subset shipped with tfprune")
    try:
        with np.load(path) as d:
            keys = set(d.files)
    except Exception as err:  # noqa: BLE001 - not an .npz, or a damaged one
        raise CLIError(f"--data {path!r} cannot be read as a .npz ({type(err).__name__}: {_fold(err, 200)}). Fix: give mnist.npz "
                       "(keras layout: x_train, y_train, x_test, y_test)") from err
    missing = sorted({"x_train", "y_train", "x_test", "y_test"} - keys)
    if missing:
        raise CLIError(f"--data {path!r} lacks {missing} (it holds {sorted(keys)}). Fix: give mnist.npz in keras' layout "
                       "(x_train, y_train, x_test, y_test)")


# ------------------------------------------------------------------- main
def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that, raised by a command, come from its input: one line, no traceback (unless --debug)."""
    errors: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError)
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        errors += (tf.errors.InvalidArgumentError,)  # data that does not fit the model, found by an op (e.g. a label >= classes)
    return errors


def _describe(err: BaseException, command: str) -> str:
    """One line for an exception a command raised, with a fix."""
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(err, tf.errors.InvalidArgumentError):
        return (f"{_fold(err, 400)}. Fix: check that --data fits MODEL (input shapes; class labels 0 to classes - 1); "
                "--debug shows the traceback")
    if isinstance(err, OSError):
        return _with_fix(_fold(err), "check the paths given, their permissions and the free disk space")
    return _with_fix(_fold(err), f"check the options (tfprune {command} --help); --debug shows the traceback")


def _report(prog: str, message: str, debug: bool) -> int:
    if debug:
        import traceback

        traceback.print_exc()
    print(f"{prog}: error: {_fold(message)}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv``; returns the exit status (2 with one line on stderr for a problem with the input)."""
    try:
        args = build_parser().parse_args(argv)
    except CLIError as err:  # a bad option value or a missing option: one line, whatever --debug says
        return _report(err.prog or "tfprune", str(err), debug=False)
    prog, debug = f"tfprune {args.command}", bool(getattr(args, "debug", False))
    try:
        _preflight(args)
        return int(args.func(args) or 0)
    except CLIError as err:  # raised for the input, with the option and the fix
        return _report(prog, str(err), debug)
    except _user_errors() as err:  # a bad value the library found, a missing/damaged file, an unwritable output, data that does not fit
        return _report(prog, _describe(err, args.command), debug)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
