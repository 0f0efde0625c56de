"""The ``tfprune`` console script."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence


def _cmd_demo(args: argparse.Namespace) -> int:
    from tfprune.demo import run_demo

    run_demo(args.data, args.out, args.sparsity, args.epochs, args.prune_epochs, allocation=args.allocation, plot=not args.no_plot)
    return 0


def _cmd_layers(args: argparse.Namespace) -> int:
    import tfprune

    print(tfprune.prunable_layers(tfprune.load_model(args.model, compile=False)).table())
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import tfprune

    model = tfprune.load_model(args.model, compile=False)
    sample = rep = None
    if args.data:
        (x_train, _), (x_test, y_test) = tfprune.datasets.mnist(args.data)
        sample, rep = (x_test, y_test), x_train[:500]
    report = tfprune.export_tflite(model, args.out, mode=args.mode, sample_inputs=sample, representative_data=rep, c_header=args.c_header)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    import tfprune

    model = tfprune.load_model(args.model, compile=False)
    data = None
    if args.data:
        _, (x_test, y_test) = tfprune.datasets.mnist(args.data)
        data = (x_test, y_test)
    report = tfprune.analyze(model, data, total_sparsity=args.sparsity, importance=args.importance, allocation=args.allocation, delta=args.delta)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    if args.plot:
        print(f"plot: {report.plot(args.plot)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tfprune", description="Importance-based layer-wise pruning for tf-keras models.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="train LeNet-5 on MNIST, prune, fine-tune, export TFLite, print a table")
    d.add_argument("--data", help="path to mnist.npz (keras layout); else $TFPRUNE_MNIST, download, or offline digits")
    d.add_argument("--out", default="out", help="output folder (default: out)")
    d.add_argument("--sparsity", type=float, default=0.9, help="total fraction of weights removed (default 0.9)")
    d.add_argument("--epochs", type=int, default=3, help="dense training epochs")
    d.add_argument("--prune-epochs", type=int, default=3, help="pruning + fine-tuning epochs")
    d.add_argument("--allocation", default=None, help="allocator (default: best available)")
    d.add_argument("--no-plot", action="store_true")
    d.set_defaults(func=_cmd_demo)

    ly = sub.add_parser("layers", help="list a saved model's prunable layers and why others are skipped")
    ly.add_argument("model")
    ly.set_defaults(func=_cmd_layers)

    e = sub.add_parser("export", help="export a saved model to a verified .tflite")
    e.add_argument("model")
    e.add_argument("--out", required=True)
    e.add_argument("--mode", default="sparse", choices=["float", "sparse", "dynamic", "int8"])
    e.add_argument("--data", help="mnist.npz for parity/calibration (else random inputs; int8 needs data)")
    e.add_argument("--c-header", default=None)
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_cmd_export)
    a = sub.add_parser("analyze", help="per-layer importance, allocation, one-shot damage, most compact layer")
    a.add_argument("model")
    a.add_argument("--data", help="mnist.npz (keras layout) for the one-shot columns")
    a.add_argument("--sparsity", type=float, default=0.9, help="total sparsity to allocate")
    a.add_argument("--importance", default="capacity")
    a.add_argument("--allocation", default="importance")
    a.add_argument("--delta", type=float, default=0.01, help="accuracy drop tolerated by the compactness search")
    a.add_argument("--plot", default=None, help="save a plot here")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_cmd_analyze)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"tfprune {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
