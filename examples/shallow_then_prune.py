"""Shallow first, then weight-prune with the importance callback, then export TFLite.

    python examples/shallow_then_prune.py [--data ../shared/data/mnist/mnist.npz]
"""

import argparse

import tfprune  # first: sets TF_USE_LEGACY_KERAS=1

ap = argparse.ArgumentParser()
ap.add_argument("--data", default=None)
ap.add_argument("--out", default="out/shallow_pruned.tflite")
args = ap.parse_args()

((x, y), (x_test, y_test)), source = tfprune.datasets.load_mnist_or_digits(args.data)
print("data:", source)
steps_per_epoch = -(-len(x) // 128)
teacher = tfprune.models.compile_classifier(tfprune.models.plain_cnn(), 1e-3, decay_steps=4 * steps_per_epoch)  # cosine decay
teacher.fit(x, y, epochs=4, batch_size=128, verbose=2)
print("dense accuracy", teacher.evaluate(x_test, y_test, verbose=0)[1])

# 1. remove whole layers whose probe gain is small (at least 30% of the FLOPs), then distil
student, result = tfprune.shallow.shallow(teacher, (x[:10000], y[:10000]), target_flops_reduction=0.3, progress=False)
print(result.table())
distiller = tfprune.Distiller(teacher, student, temperature=4.0, alpha=0.9)
distiller.compile(optimizer=tfprune.training.finetune.adam_cosine(1e-3, decay_steps=3 * steps_per_epoch))
distiller.fit(x, y, epochs=3, batch_size=128, verbose=2)
print("student accuracy after distillation", tfprune.models.compile_classifier(student).evaluate(x_test, y_test, verbose=0)[1])

# 2. importance-based weight pruning of what is left
pruned = tfprune.models.compile_classifier(tfprune.wrap(student), learning_rate=5e-4)
pruned.fit(x, y, epochs=2, batch_size=128, verbose=2, callbacks=[tfprune.Pruning(0.8)])

# 3. export, verified
report = tfprune.export_tflite(pruned, args.out, mode="sparse", sample_inputs=(x_test, y_test), n_samples=2000)
print(report.table())
