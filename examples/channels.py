"""Remove channels for real inside fit: wrap for channel groups, one callback, finalize, export.

    python examples/channels.py [--data ../shared/data/mnist/mnist.npz]
"""

import argparse

import tfprune  # first: sets TF_USE_LEGACY_KERAS=1

ap = argparse.ArgumentParser()
ap.add_argument("--data", default=None)
ap.add_argument("--macs", type=float, default=0.5, help="fraction of MACs removed")
ap.add_argument("--out", default="out/channels.tflite")
args = ap.parse_args()

((x, y), (x_test, y_test)), source = tfprune.datasets.load_mnist_or_digits(args.data)
print("data:", source)
dense = tfprune.models.compile_classifier(tfprune.models.resnet20((28, 28, 1), 10))
dense.fit(x, y, epochs=1, batch_size=128, verbose=2)
print(tfprune.plan(dense, macs=args.macs, granularity="channel").table())  # the plan the callback will make

model = tfprune.models.compile_classifier(tfprune.wrap(dense, granularity="channel"), 5e-4)
cb = tfprune.Pruning(macs=args.macs)                # whole coupled groups, masked in the train step along a ramp
model.fit(x, y, epochs=2, batch_size=128, verbose=2, callbacks=[cb])
small = cb.finalize()                               # physically smaller; checked to compute what the masked model does
print(cb.shrink_report_.table())
small_acc = tfprune.models.compile_classifier(small).evaluate(x_test, y_test, verbose=0)[1]
print("accuracy: masked", model.evaluate(x_test, y_test, verbose=0)[1], "small", small_acc)
report = tfprune.export_tflite(small, args.out, mode="float", sample_inputs=(x_test, y_test), n_samples=1000)
print(report.table())
