"""The Keras 3 backend: prune a Keras 3 model (``import keras``) in its own ``model.fit``, on any Keras backend.

The same spine as the tf-keras path (one `tfprune.plan`, the same importance
scorers, allocators, mask rules and `tfprune.Pruning` callback), with Keras 3
objects at the edges:

* `tfprune.keras3.masks`: the mask rules in ``keras.ops`` (twins of the numpy
  references in `tfprune.masks.granularity`), run inside the train step;
* `tfprune.keras3.wrapper`: `PruneWrapper`, a Keras 3 layer that holds a
  layer's mask, step counter and schedule as variables and computes the layer
  on ``kernel * mask``;
* `tfprune.keras3.models`: wrap, strip, and walk Keras 3 models.

Nothing here imports tf-keras objects; importing this package imports Keras 3.
The public entry points (`tfprune.wrap`, `tfprune.strip`, `tfprune.plan`,
`tfprune.Pruning`, `tfprune.load_model`, ...) dispatch here when they are
given a Keras 3 model, so users rarely import it directly.
"""
