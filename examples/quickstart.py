"""The README quickstart, runnable: wrap, fit with one callback, export."""

import tfprune  # first: sets TF_USE_LEGACY_KERAS=1

(x_train, y_train), (x_test, y_test) = tfprune.datasets.load_mnist_or_digits()[0]
model = tfprune.models.compile_classifier(tfprune.models.lenet5())
model.fit(x_train, y_train, epochs=1, batch_size=128)

pruned = tfprune.models.compile_classifier(tfprune.wrap(model))
pruned.fit(x_train, y_train, epochs=2, batch_size=128, callbacks=[tfprune.Pruning(0.9)])

report = tfprune.export_tflite(pruned, "out/quickstart.tflite", mode="sparse", sample_inputs=(x_test, y_test))
print(report.table())
