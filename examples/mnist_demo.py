"""README demo: train LeNet-5, prune to 90% with the best allocator, fine-tune, export TFLite.

    python examples/mnist_demo.py --data ../shared/data/mnist/mnist.npz
"""

import sys

import tfprune  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from tfprune.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
