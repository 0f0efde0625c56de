"""Write tfprune/resources/mnist_small.npz: the MNIST subset that ships with tfprune.

It holds the first 8,000 training and the first 2,000 test images of a
keras-layout ``mnist.npz`` (uint8, ``np.savez_compressed``), so that the demo
and the tests use real 28x28 digits on a machine without the full set.

    python tools/make_mnist_small.py [--src ../shared/data/mnist/mnist.npz]
"""

from __future__ import annotations

import argparse
import hashlib
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SRC = os.path.join(HERE, "..", "..", "shared", "data", "mnist", "mnist.npz")
DEFAULT_OUT = os.path.join(HERE, "..", "tfprune", "resources", "mnist_small.npz")
N_TRAIN, N_TEST = 8000, 2000


def subset(src: str, n_train: int, n_test: int) -> dict[str, np.ndarray]:
    """The first ``n_train`` / ``n_test`` images and labels of ``src``, as uint8."""
    with np.load(src) as d:
        out = {
            "x_train": d["x_train"][:n_train],
            "y_train": d["y_train"][:n_train],
            "x_test": d["x_test"][:n_test],
            "y_test": d["y_test"][:n_test],
        }
    for key, arr in out.items():
        if arr.dtype != np.uint8:
            raise ValueError(f"{src}: {key} is {arr.dtype}, expected uint8 (keras' mnist.npz layout)")
    if len(out["x_train"]) < n_train or len(out["x_test"]) < n_test:
        raise ValueError(f"{src} has fewer than {n_train} train / {n_test} test images")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=os.environ.get("TFPRUNE_MNIST") or DEFAULT_SRC)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    arrays = subset(args.src, N_TRAIN, N_TEST)
    np.savez_compressed(args.out, **arrays)
    digest = hashlib.sha256(open(args.out, "rb").read()).hexdigest()
    counts = np.bincount(arrays["y_train"], minlength=10).tolist()
    print(f"wrote {args.out}: {os.path.getsize(args.out)} bytes, sha256 {digest}")
    print(f"train {arrays['x_train'].shape}, test {arrays['x_test'].shape}; train images per class {counts}")


if __name__ == "__main__":
    main()
