"""`compress`: from a trained model to the most accurate smaller model under a latency budget (a NetAdapt-style search).

The search (Yang et al., NetAdapt, ECCV 2018), on a `LatencyTable` of the
model's own layers (`tfprune.latency`):

1. Start from the dense model; its predicted latency is ``L0``; the budget
   ``T`` is ``latency * L0`` (a ratio) or a number of milliseconds.
2. Each iteration asks for a step of latency ``d = (L0 - T) / iterations``
   (the last one lands on ``T``). For every prunable channel group of the
   current model it proposes the **smallest** cut of its lowest-scored
   channels (L2 over all coupled weights) whose predicted latency is at most
   ``L_i - d``; a group that cannot save ``d`` on its own proposes nothing
   (when no group can, ``d`` is halved). With ``shallowing``, every layer
   or residual block whose removal keeps the graph valid (Shallowing Deep
   Networks' units) is proposed too when removing it saves at least ``d``.
3. Each proposal is built (`tfprune.shrink`, exact; or the unit removed), its BatchNorm
   statistics re-estimated on training inputs, and scored by the accuracy
   on ``proposal_samples`` validation images (the proxy; with
   ``proposal_steps > 0`` after that many fine-tuning steps, NetAdapt's
   short-term fine-tune).
   When the best proposal loses more than ``max_step_drop`` of the proxy
   accuracy against the current model (a step too big for the model's
   narrow groups: on a MobileNetV2 at half the latency, fixed steps cut a
   32-channel residual stream to 2 channels), ``d`` is halved and the
   proposals made and scored again, up to `STEP_HALVINGS` times; the
   smaller step is kept for the iterations that follow.
4. The best proposal is kept and fine-tuned for ``finetune_steps`` steps
   (scaled by the step's share of the planned ``d``, so smaller steps do
   not add fine-tuning); the state is written to ``state_dir`` (the model and a JSON of the path),
   so an interrupted search resumes from its last accepted step.
5. When the prediction is under the budget (and, with ``size``, the file as
   it would be written fits ``size`` bytes; while it does not, the search
   goes on with latency steps) (or the next iteration and the
   final fine-tune would not fit in ``time_budget`` seconds), the model is fine-tuned for ``final_steps`` steps, converted to
   float TFLite and timed beside the dense model: the result gives the
   measured latency ratio and the table's error on it.
6. With ``out``, the file is written (parity checked against the Keras
   model). ``quantize="auto"`` also converts it to int8 (calibrated on
   training inputs, checked on validation images) and keeps the int8 file
   when it is no slower than the float one and its accuracy holds (within
   ``max_accuracy_drop`` of the dense model, or within 0.2 points of the
   float file): about 4x smaller at no cost in latency; with ``size``, a
   float file over it gives way to an int8 file within it. Weight sparsity is
   not applied: a sparse .tflite is no smaller unless it is compressed,
   and LiteRT's CPU kernels do not run it faster on x86 hosts.

Every random choice (data order, fine-tuning) is seeded by ``seed`` and the
iteration, so a resumed search ends with the same model as an
uninterrupted one (on the same machine and thread settings).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tfprune._keras import is_keras3_object, keras
from tfprune.latency.cost import LatencyCost
from tfprune.latency.measure import build_table, tflite_bytes, time_tflite
from tfprune.latency.result import CompressResult, SearchStep
from tfprune.latency.table import LatencyTable
from tfprune.structured.graph import channel_graph
from tfprune.structured.importance import channel_importance
from tfprune.structured.plan import smallest_prefix
from tfprune.structured.removal import shrink
from tfprune.validation import check_int, fraction, number

__all__ = ["compress", "parse_latency", "parse_size", "fine_tune", "propose", "next_iteration_fits", "pick_step", "step_finetune_steps",
           "STEP_HALVINGS"]

STEP_HALVINGS = 3
"""How many times one iteration may halve its step when every proposal loses more than ``max_step_drop``."""


def parse_latency(latency: Any) -> tuple[str, float]:
    """``("ratio", r)`` for a number in (0, 1], ``("ms", v)`` for ``"3.5ms"``; ValueError otherwise."""
    if isinstance(latency, str) and latency.strip().lower().endswith("ms"):
        try:
            v = float(latency.strip()[:-2])
        except ValueError:
            v = float("nan")
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"latency must be a ratio in (0, 1] or a time such as '3.5ms', got {latency!r}. Fix: pass e.g. latency=0.5 "
                             "or latency='3.5ms'")
        return "ms", v
    r = fraction(latency, "latency", unit="ratio of the dense model's latency, or a string such as '3.5ms'", low=0.0, high=1.0,
                 include_low=False, include_high=True, example="0.5 asks for half the dense model's milliseconds")
    return "ratio", float(r)


_SIZE_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_size(size: Any) -> int | None:
    """Bytes from ``size``: None (no limit), a positive whole number of bytes, or a string such as ``"400KB"``, ``"1.5MB"``,
    ``"512KiB"`` (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024; rounded down to whole bytes); ValueError otherwise."""
    fix = "Fix: pass a number of bytes (size=400_000) or a string such as size='400KB' or '1.5MB'; None for no limit"
    if size is None:
        return None
    if isinstance(size, bool):
        raise TypeError(f"size must be a number of bytes or a string such as '400KB', got {size!r}. {fix}")
    if isinstance(size, str):
        text = size.strip().lower().replace(" ", "")
        unit = next((u for u in sorted(_SIZE_UNITS, key=len, reverse=True) if text.endswith(u)), "")
        try:
            value = float(text[:len(text) - len(unit)]) * _SIZE_UNITS.get(unit, 1)
        except ValueError:
            value = float("nan")
    elif isinstance(size, (int, float, np.integer, np.floating)):
        value = float(size)
    else:
        raise TypeError(f"size must be a number of bytes or a string such as '400KB', got {type(size).__name__}. {fix}")
    if not (np.isfinite(value) and value >= 1):
        raise ValueError(f"size must be at least 1 byte (a number, or a string such as '400KB'), got {size!r}. {fix}")
    return int(value)


def next_iteration_fits(elapsed: float, last_iteration: float, reserve: float, time_budget: float | None) -> bool:
    """Whether another search iteration fits in ``time_budget`` seconds (None: no limit).

    ``elapsed``: seconds spent so far (table, search); ``last_iteration``: seconds of the last iteration (0 when none ran
    in this call yet: the first iteration is always allowed when time is left); ``reserve``: seconds still needed after
    the search (the final fine-tune at the measured speed, timing and the file). All in seconds.
    """
    if time_budget is None:
        return True
    return elapsed + last_iteration + reserve <= time_budget and elapsed < time_budget


def pick_step(best_accuracies: list[float], reference: float, max_step_drop: float | None, *, can_halve: bool = True
              ) -> int | None:
    """Which try of an iteration to accept, or None to halve the step and try again.

    ``best_accuracies[i]``: the best proposal's proxy accuracy (fraction) at the ``i``-th try (the planned step, then halved
    ones); ``reference``: the current model's accuracy on the same images. The last try is accepted when its best loses at
    most ``max_step_drop`` (or when ``max_step_drop`` is None: NetAdapt's fixed steps). After `STEP_HALVINGS` halvings with
    every try losing more, or when ``can_halve`` is False (a halved step found no proposal), the most accurate try is
    accepted (ties: the earlier, larger step).
    """
    if not best_accuracies:
        raise ValueError("best_accuracies is empty: pick_step needs at least one scored try")
    last = len(best_accuracies) - 1
    if max_step_drop is None or best_accuracies[last] >= reference - max_step_drop:
        return last
    if can_halve and last < STEP_HALVINGS:
        return None
    return int(np.argmax(np.asarray(best_accuracies, dtype=np.float64)))


def step_finetune_steps(finetune_steps: int, step_ms: float, planned_ms: float) -> int:
    """Fine-tuning steps for an accepted step asked to save ``step_ms`` when the plan was ``planned_ms`` per step.

    ``finetune_steps * step_ms / planned_ms``, rounded, at least 1 (0 when ``finetune_steps`` is 0) and at most
    ``finetune_steps``: a halved step fine-tunes half as long, so the search's fine-tuning stays about ``iterations *
    finetune_steps`` however often it halves.
    """
    if finetune_steps <= 0:
        return 0
    if planned_ms <= 0:
        return int(finetune_steps)
    return int(min(finetune_steps, max(1, round(finetune_steps * step_ms / planned_ms))))


def _as_arrays(data: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError(f"{name} must be (x, y) arrays, got {type(data).__name__}. Fix: pass {name}=(x, y)")
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{name}: x has {len(x)} examples and y {len(y)}. Fix: pass the same number of inputs and labels (at least one)")
    return x, y


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    logits = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    labels = y.reshape(-1) if y.ndim == 1 or y.shape[-1] == 1 else np.argmax(y, -1)
    return float(np.mean(np.argmax(logits, -1) == labels))


def _train_batches(train: Any, batch_size: int, seed: int) -> Any:
    """A repeated tf.data pipeline: the caller's dataset, or (x, y) arrays shuffled with ``seed``."""
    import tensorflow as tf

    if isinstance(train, tf.data.Dataset):
        return train.repeat()
    x, y = train
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).repeat()


def fine_tune(model: Any, train: Any, steps: int, lr: float, batch_size: int, seed: int, loss: Any) -> None:
    """``steps`` optimizer steps of Adam (``lr`` decayed to 0 by a cosine) on ``train`` ((x, y) arrays or a tf.data dataset of batches), seeded."""
    from tfprune.training.finetune import adam_cosine

    if steps <= 0:
        return
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=adam_cosine(lr, steps), loss=loss)
    model.fit(_train_batches(train, batch_size, seed), steps_per_epoch=steps, epochs=1, verbose=0)


def _calibration_inputs(train: Any, n: int) -> np.ndarray:
    import tensorflow as tf

    if isinstance(train, tf.data.Dataset):
        xs = []
        for xb, _ in train.take(max(1, n // 32 + 1)):
            xs.append(np.asarray(xb))
            if sum(len(v) for v in xs) >= n:
                break
        return np.concatenate(xs)[:n]
    return np.asarray(train[0][:n])


def _config_hash(model: Any, settings: dict) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:16]


def _save_state(state_dir: str, model: Any, state: dict) -> None:
    from tfprune.files import atomic_path, atomic_write

    os.makedirs(state_dir, exist_ok=True)
    with atomic_path(os.path.join(state_dir, "model.keras")) as tmp:
        model.save(tmp)
    with atomic_write(os.path.join(state_dir, "state.json"), "w") as f:
        json.dump(state, f, indent=1)


def _load_state(state_dir: str | None, key: str) -> tuple[dict | None, Any]:
    if not state_dir or not os.path.isfile(os.path.join(state_dir, "state.json")):
        return None, None
    with open(os.path.join(state_dir, "state.json")) as f:
        state = json.load(f)
    if state.get("key") != key:
        raise ValueError(f"state_dir {state_dir!r} holds a search of another model or with other settings. Fix: pass a new state_dir, "
                         "or delete that folder to start over")
    from tfprune.io import load_model

    return state, load_model(os.path.join(state_dir, "model.keras"), compile=False)


Proposal = tuple[str, str, int, float, Callable[[], Any]]


def propose(model: Any, table: LatencyTable, step_ms: float, goal_ms: float, *, min_channels: int = 1, shallowing: bool = True,
            x: np.ndarray | None = None, graph: Any = None, cost: LatencyCost | None = None) -> list[Proposal]:
    """One iteration's proposals (step 2 of the search): ``[(what, kind, count, predicted ms, build)]``.

    For every prunable channel group, the smallest cut of its lowest-L2 channels whose predicted latency is at most
    ``max(now - step_ms, goal_ms)`` (``kind "channels"``, ``what`` the group, ``count`` channels); with ``shallowing``, every
    removable layer or block that saves as much (``kind "layer" | "block"``, ``count`` layers). ``step_ms`` is halved until
    something qualifies (down to a millionth of the current prediction; then the list is empty). ``build()`` returns the
    smaller model (``model`` is not changed); ``x``: a few inputs for `tfprune.shrink`'s exactness check.
    """
    cg = graph if graph is not None else channel_graph(model)
    cost = cost if cost is not None else LatencyCost(cg, table)
    now = cost.estimate()
    scores = channel_importance(model, "l2", graph=cg).scores
    removals = _unit_removals(model, table) if shallowing else []
    proposals: list[Proposal] = []
    delta = float(step_ms)
    while not proposals and delta > 1e-6 * now:
        target = max(now - delta, goal_ms)
        for g in cg.prunable:
            order = np.argsort(np.asarray(scores[g.name]), kind="stable")
            removable = g.channels - min_channels
            if removable <= 0:
                continue
            labels = np.asarray([int(g.labels[c]) for c in order[:removable]], dtype=np.int64)
            idx = np.searchsorted(cost.all_labels, labels)

            def est(k: int, idx: np.ndarray = idx) -> float:
                removed = np.zeros(cost.all_labels.size, bool)
                removed[idx[:k]] = True
                return cost.estimate(removed)

            k = smallest_prefix(est, removable, target)
            if k > 0 and est(k) <= target:
                chans = sorted(int(c) for c in order[:k])
                proposals.append((g.name, "channels", k, est(k), lambda name=g.name, chans=chans: shrink(model, {name: chans}, x=x)[0]))
        for what, kind, count, pred, small in removals:  # a unit is proposed when it saves at least the step
            if pred <= target:
                proposals.append((what, kind, count, pred, lambda small=small: small))
        if not proposals:
            delta /= 2
    return proposals


def _unit_removals(model: Any, table: LatencyTable) -> list[tuple[str, str, int, float, Any]]:
    """Every layer or residual block shallowing may remove from ``model`` (`tfprune.shallow.graph.find_units`), as
    ``(end layer, "layer" | "block", layers removed, predicted ms without it, the model without it)``."""
    from tfprune.shallow.graph import find_units, remove_units

    out = []
    for unit in find_units(model):
        if not unit.removable:
            continue
        try:
            small = remove_units(model, [unit])
        except (ValueError, RuntimeError):
            continue
        out.append((unit.end, unit.kind, len(unit.layers), LatencyCost(channel_graph(small), table).estimate(), small))
    return out


def _write_file(model: Any, out: str, quantize: str, x_cal: np.ndarray, validation: tuple[np.ndarray, np.ndarray], dense_acc: float,
                max_drop: float, threads: int, say: Callable[[str], None], size_limit: int | None = None) -> tuple[Any, dict]:
    """Export ``model`` to ``out`` as float or int8 (see `compress`); the export report and what was chosen, with the numbers.

    ``quantize="auto"`` keeps int8 when it is no slower and keeps the accuracy, else float; with ``size_limit`` (bytes), a
    float file over it gives way to an int8 file within it."""
    import shutil
    import tempfile

    from tfprune.export.pipeline import export_tflite
    from tfprune.latency.measure import time_tflite

    xv, yv = validation
    sample = (xv[:1000], yv[:1000])
    folder = tempfile.mkdtemp(prefix="tfprune-compress-")
    try:
        reports = {}
        for mode in (("float", "int8") if quantize == "auto" else (quantize,)):
            path = os.path.join(folder, f"{mode}.tflite")
            kwargs = {"representative_data": x_cal} if mode == "int8" else {}
            reports[mode] = export_tflite(model, path, mode="float" if mode == "float" else "int8", sample_inputs=sample, **kwargs)
        contents = {}
        for mode in reports:
            with open(os.path.join(folder, f"{mode}.tflite"), "rb") as f:
                contents[mode] = f.read()
        ms, _ = time_tflite(contents, threads, rounds=20, block=10)
        choice = {"quantize": quantize, **{f"{m}_ms": ms[m] for m in reports}, **{f"{m}_bytes": reports[m].bytes for m in reports},
                  **{f"{m}_accuracy": reports[m].tflite_accuracy for m in reports}}
        chosen = quantize
        if quantize == "auto":
            acc8, accf = reports["int8"].tflite_accuracy, reports["float"].tflite_accuracy
            faster = ms["int8"] <= 1.02 * ms["float"]
            accurate = dense_acc - acc8 <= max_drop or acc8 >= accf - 0.002
            chosen = "int8" if faster and accurate else "float"
            choice["reason"] = (f"int8 {ms['int8']:.4f} ms vs float {ms['float']:.4f} ms, accuracy {acc8:.4f} vs {accf:.4f} on "
                                f"{len(sample[0])} validation images: " + ("kept int8" if chosen == "int8" else
                                ("float: int8 is slower" if not faster else "float: int8 loses accuracy")))
            if size_limit is not None and chosen == "float" and reports["float"].bytes > size_limit >= reports["int8"].bytes:
                chosen = "int8"
                choice["reason"] += (f"; int8 after all: the float file ({reports['float'].bytes:,} bytes) is over size "
                                     f"({size_limit:,} bytes), the int8 one ({reports['int8'].bytes:,}) fits")
            say(f"[compress] {choice['reason']}")
        choice["format"] = chosen
        from tfprune.files import atomic_path

        with atomic_path(out) as tmp:
            shutil.copyfile(os.path.join(folder, f"{chosen}.tflite"), tmp)
        report = reports[chosen]
        report.path = out
        return report, choice
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def compress(
    model: Any,
    data: Any,
    *,
    latency: float | str = 0.5,
    max_accuracy_drop: float = 0.01,
    size: int | str | None = None,
    validation: Any = None,
    table: LatencyTable | None = None,
    threads: int = 1,
    check_latency: bool | None = None,
    iterations: int = 8,
    min_channels: int = 1,
    shallowing: bool = True,
    proposal_samples: int = 1000,
    proposal_steps: int = 0,
    max_step_drop: float | None = 0.05,
    finetune_steps: int = 100,
    final_steps: int = 1000,
    learning_rate: float = 1e-4,
    batch_size: int = 64,
    loss: Any = None,
    time_budget: float | None = 3600.0,
    state_dir: str | None = None,
    out: str | None = None,
    quantize: str = "auto",
    seed: int = 0,
    verbose: int = 1,
    progress: Callable[[str], None] | None = None,
) -> CompressResult:
    """The most accurate channel-pruned copy of ``model`` whose LiteRT latency is within ``latency``.

    Args:
      model: a trained tf-keras (or Keras 3) classifier with a fixed input size; not changed.
      data: training data: ``(x, y)`` arrays, or a ``tf.data.Dataset`` of ``(x, y)`` batches (then ``validation`` is required).
      latency: the budget: a ratio of the dense model's latency (0.5: half the milliseconds) or a string like ``"3.5ms"``.
      max_accuracy_drop: the accuracy the search may lose (a fraction: 0.01 is one point); the result says whether it holds.
      size: the most bytes the written file may have (needs ``out``): a number of bytes or a string such as ``"400KB"`` or
        ``"1.5MB"`` (`parse_size`). The search then stops only when the latency budget holds *and* the file, converted as it
        would be written (int8 unless ``quantize="float"``), fits; while the latency holds and the file does not, it goes on
        with latency steps of the current size (each cut also removes weights). With ``quantize="auto"`` a float file over
        ``size`` gives way to the int8 one. The result says whether the written file fits (`CompressResult.meets_size`).
        None (default): no size limit.
      validation: ``(x, y)`` arrays to score and report accuracy (default: the last 10% of ``data``'s arrays, kept out of training).
      table: a `LatencyTable` for the model (default: `tfprune.latency.build_table` on this machine, ``threads`` threads).
      check_latency: time every accepted step as float TFLite beside the dense model (a few seconds each) and stop when the
        *measured* latency meets the budget, aiming each step at the table's milliseconds corrected by the last measured/predicted
        ratio. None (default): when the table is for ``"host"`` (a table imported from another device cannot be checked here).
      iterations: planned search iterations (each removes about ``1/iterations`` of the latency to remove).
      min_channels: channels every group keeps.
      shallowing: also propose removing each layer or residual block that shallowing may remove (one whose output has its
        input's shape: `tfprune.shallow.graph.find_units`), when that saves at least the step's latency.
      proposal_samples: validation images scoring each proposal.
      proposal_steps: fine-tuning steps before a proposal is scored (0: BatchNorm re-estimation only).
      max_step_drop: the proxy accuracy (fraction; 0.05 is five points) one step may lose against the current model before the
        step is halved and proposed again (at most `STEP_HALVINGS` times; the smaller step is kept). None: fixed steps, as
        NetAdapt. The default came from MobileNetV2 w0.5 at half the latency, where fixed steps lost 13-47 points each from the
        third step on; on the VGG-16 w0.25 at 0.7 no step lost more than 3.5.
      finetune_steps: fine-tuning steps of each accepted step of the planned size (a halved step runs half as many).
      final_steps: fine-tuning steps of the final model.
      learning_rate, batch_size, loss: fine-tuning (Adam, ``learning_rate`` decayed to 0 by a cosine; the model's compiled loss by default).
        The default 1e-4 is gentle on purpose: 100 steps of Adam at 1e-3 cost a CIFAR-10 VGG (trained with SGD) 3.6 points that the
        pruning step itself had not cost (benchmarks/compress.py, first attempt).
      time_budget: seconds the whole call may take: table, search, final fine-tune and file. Before each iteration the search
        stops when that iteration (as long as the last one) and what must follow (``final_steps`` at the fine-tuning speed
        measured so far, the final timing and the file, as long as the timings so far) would not fit (`next_iteration_fits`).
        The first iteration of a call always runs, and a resumed call starts a new budget. Default one hour; None: no limit.
      state_dir: a folder for the search's state (the table it uses, the model and path after each accepted step): an
        interrupted search resumes there from its last accepted step, with the same table. ``size`` only decides where the
        search stops, so a finished search can be resumed with a smaller ``size`` to go on from its last step.
      out: a path for the final ``.tflite`` (verified against the Keras model); None: not written.
      quantize: ``"auto"`` (write int8 when it is no slower and keeps the accuracy, else float), ``"int8"`` or ``"float"``
        (that format, whatever it costs); only with ``out``.
      seed: seeds data order and fine-tuning.
      verbose: 1 shows progress (tqdm over iterations) and the report; 0 is quiet.
      progress: called with each line of progress text instead of printing it.

    Returns a `CompressResult`: the model, the search's path (every accepted step), the measured latency of the dense and
    final models as float TFLite, the table's error on the final model, accuracies, and ``plot()``.
    """
    from tfprune.training.finetune import model_loss, reestimate_batchnorm

    t_start = time.perf_counter()
    keras3_in = is_keras3_object(model)
    if keras3_in:
        from tfprune.keras3.convert import to_tf_keras

        model = to_tf_keras(model)
    latency_kind, budget_value = parse_latency(latency)  # "ratio" | "ms"; ``kind`` below is a proposal's kind
    max_accuracy_drop = fraction(max_accuracy_drop, "max_accuracy_drop", unit="fraction of accuracy (0.01 = one point)")
    iterations = check_int(iterations, "iterations", 1)
    min_channels = check_int(min_channels, "min_channels", 1)
    proposal_samples = check_int(proposal_samples, "proposal_samples", 1)
    proposal_steps = check_int(proposal_steps, "proposal_steps", 0)
    if max_step_drop is not None:
        max_step_drop = fraction(max_step_drop, "max_step_drop", unit="fraction of accuracy; None: fixed steps", include_high=True,
                                 example="0.05 (a step may lose five points of proxy accuracy before it is halved)")
    finetune_steps = check_int(finetune_steps, "finetune_steps", 0)
    final_steps = check_int(final_steps, "final_steps", 0)
    batch_size = check_int(batch_size, "batch_size", 1)
    learning_rate = number(learning_rate, "learning_rate", minimum=0.0, strict=True)
    if quantize not in ("auto", "int8", "float"):
        raise ValueError(f"quantize must be 'auto', 'int8' or 'float', got {quantize!r}. Fix: quantize='auto' keeps int8 where it "
                         "is no slower and as accurate")
    if time_budget is not None:
        time_budget = number(time_budget, "time_budget (seconds)", minimum=0.0, strict=True)
    size_limit = parse_size(size)
    if size_limit is not None and out is None:
        raise ValueError(f"size={size!r} limits the written .tflite file, but out is None. Fix: pass out='small.tflite' too, "
                         "or size=None")
    size_format = "float" if quantize == "float" else "int8"
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        if validation is None:
            raise ValueError("data is a tf.data.Dataset, so compress cannot split off validation images. Fix: pass validation=(x, y)")
        train = data
    else:
        x, y = _as_arrays(data, "data")
        if validation is None:
            n_val = max(1, len(x) // 10)
            train, validation = (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:])
        else:
            train = (x, y)
    xv, yv = _as_arrays(validation, "validation")
    loss_spec = model_loss(model, loss)
    say = progress or (print if verbose else (lambda _: None))
    saved_table = os.path.join(state_dir, "table.json") if state_dir else None
    if table is None and saved_table and os.path.isfile(saved_table):  # a resumed search goes on with the table it started with
        table = LatencyTable.load(saved_table)
    if table is None:
        table = build_table(model, threads=threads, progress=say if verbose else None)
    elif not isinstance(table, LatencyTable):
        raise TypeError(f"table must be a tfprune.latency.LatencyTable, got {type(table).__name__}. Fix: tfprune.latency.build_table(model), "
                        "or LatencyTable.load(path)")
    check = (table.device == "host") if check_latency is None else bool(check_latency)
    dense_cost = LatencyCost(channel_graph(model), table)
    dense_pred = dense_cost.estimate()
    goal = budget_value * dense_pred if latency_kind == "ratio" else budget_value
    settings = {"latency": [latency_kind, budget_value], "iterations": iterations, "min_channels": min_channels, "shallowing": bool(shallowing),
                "check_latency": check,
                "proposal_samples": proposal_samples,
                "proposal_steps": proposal_steps, "max_step_drop": max_step_drop, "finetune_steps": finetune_steps,
                "learning_rate": learning_rate, "batch_size": batch_size,
                "seed": seed, "table": table.to_dict()}
    key = _config_hash(model, settings)
    xp, yp = xv[:proposal_samples], yv[:proposal_samples]
    x_cal = _calibration_inputs(train, 1024)
    in_dtype = np.dtype(getattr(model.inputs[0].dtype, "as_numpy_dtype", model.inputs[0].dtype))
    if np.issubdtype(in_dtype, np.floating) and not np.issubdtype(x_cal.dtype, np.floating):
        x_cal = x_cal.astype(in_dtype)  # raw pixels (uint8) for a float input: int8 calibration feeds the file's input type
    dense_acc = _accuracy(model, xv, yv, 256)
    dense_proposal_acc = _accuracy(model, xp, yp, 256)

    planned_delta = (dense_pred - goal) / iterations  # ms each iteration is asked to save
    state, current = _load_state(state_dir, key)
    if state is None:
        current = keras.models.clone_model(model)
        current.set_weights(model.get_weights())
        state = {"key": key, "steps": [], "delta": planned_delta}
        if saved_table:
            os.makedirs(state_dir, exist_ok=True)
            table.save(saved_table)
        say(f"[compress] dense: {dense_pred:.4f} ms predicted, accuracy {dense_acc:.4f}; budget {goal:.4f} ms")
    else:
        say(f"[compress] resumed from {state_dir!r} after {len(state['steps'])} accepted step(s)")
    steps = [SearchStep(**s) for s in state["steps"]]
    dense_bytes: list[bytes] = []

    def dense_file() -> bytes:
        if not dense_bytes:
            dense_bytes.append(tflite_bytes(model))
        return dense_bytes[0]

    if check and latency_kind == "ms" and state.get("dense_ms") is None:
        state["dense_ms"] = time_tflite({"dense": dense_file()}, table.threads, rounds=20, block=10)[0]["dense"]
    r_budget = budget_value if latency_kind == "ratio" else (budget_value / state["dense_ms"] if check else goal / dense_pred)
    # seconds measured in this call: the last iteration, one fine-tuning step, one timing of a model beside the dense one
    clock = {"iteration": 0.0, "per_step": 0.0, "check": 0.0}
    size_now: int | None = None  # bytes of the current model's file as it would be written (with size only)
    size_noted = False

    def file_size(m: Any) -> int:
        """Bytes of ``m`` converted as `compress` writes it in ``size_format`` (int8: calibrated on training inputs)."""
        from tfprune.export.convert import convert, stores_sparse

        rep = np.asarray(x_cal[:256], dtype=np.float32) if size_format == "int8" else None
        return len(convert(m, size_format, rep, stores_sparse(size_format, True), False))

    stop_reason = f"{10 * iterations} iterations (the most a search runs)"
    iterator: Any = range(10 * iterations)
    if verbose and progress is None:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="compress", unit="step", leave=False)
    for _ in iterator:
        cg = channel_graph(current)
        cost = LatencyCost(cg, table)
        now = cost.estimate()
        if check:  # the budget is met when the measured latency is: the table only chooses the cuts
            measured = steps[-1].measured_ratio if steps else 1.0
            latency_met, met_reason = measured <= r_budget, "the measured latency meets the budget"
            goal_now = now * r_budget / measured  # the table's milliseconds that the measured budget corresponds to here
        else:
            latency_met, met_reason = now <= goal * (1 + 1e-9), "the predicted latency meets the budget"
            goal_now = goal
        if latency_met:
            if size_limit is None:
                stop_reason = met_reason
                break
            if size_now is None:
                size_now = file_size(current)
            if size_now <= size_limit:
                stop_reason = f"{met_reason} and the {size_format} file ({size_now:,} bytes) fits size ({size_limit:,} bytes)"
                break
            if not size_noted:
                say(f"[compress] the latency budget holds; the {size_format} file would be {size_now:,} bytes, over size "
                    f"({size_limit:,} bytes): going on with latency steps")
                size_noted = True
            goal_now = 0.0  # the latency holds, the file does not: go on with latency steps (each cut removes weights too)
        reserve = final_steps * clock["per_step"] + clock["check"] * (1 + (2 if out is not None and quantize == "auto" else
                                                                          1 if out is not None else 0))
        if not next_iteration_fits(time.perf_counter() - t_start, clock["iteration"], reserve, time_budget):
            say(f"[compress] time budget of {time_budget:.0f} s: the next iteration ({clock['iteration']:.0f} s) and the final "
                f"fine-tune and file ({reserve:.0f} s) would not fit; stopping at {now:.4f} ms (budget {goal:.4f} ms)")
            stop_reason = "time budget"
            break
        it = len(steps) + 1
        t_it = time.perf_counter()
        reference = steps[-1].accuracy if steps else dense_proposal_acc
        delta, tries, scored_total, choice = float(state["delta"]), [], 0, None
        while True:  # the planned step, halved while every proposal loses more than max_step_drop
            proposals = propose(current, table, delta, goal_now, min_channels=min_channels, shallowing=shallowing, x=x_cal[:4],
                                graph=cg, cost=cost)
            if not proposals:  # a halved step found nothing: the most accurate try so far
                if tries:
                    choice = pick_step([t[1][0] for t in tries], reference, max_step_drop, can_halve=False)
                break
            scored = []
            for n, (what, kind, count, pred, build) in enumerate(proposals):
                small = build()
                reestimate_batchnorm(small, x_cal)
                if proposal_steps:
                    fine_tune(small, train, proposal_steps, learning_rate, batch_size, seed * 100003 + it, loss_spec.loss)
                scored.append((_accuracy(small, xp, yp, 256), -pred, -n, what, kind, count, pred, small))
            scored.sort(key=lambda s: (s[0], s[1], s[2]), reverse=True)
            scored_total += len(scored)
            tries.append((delta, scored[0]))
            choice = pick_step([t[1][0] for t in tries], reference, max_step_drop)
            if choice is not None:
                break
            say(f"[compress] iteration {it}: the best cut of {delta:.4f} ms loses {100 * (reference - scored[0][0]):.1f} points "
                f"(more than max_step_drop); halving the step")
            delta /= 2
        if not tries:
            say(f"[compress] no channel group can lower the latency any further at {now:.4f} ms (budget {goal:.4f} ms)")
            stop_reason = "no proposal lowers the latency further"
            break
        delta, (acc, _, _, name, kind, count, pred, small) = tries[choice]
        state["delta"] = delta
        tries.clear()
        step_tune = step_finetune_steps(finetune_steps, delta, planned_delta)
        t_tune = time.perf_counter()
        fine_tune(small, train, step_tune, learning_rate, batch_size, seed * 100003 + it, loss_spec.loss)
        if step_tune:
            clock["per_step"] = (time.perf_counter() - t_tune) / step_tune
        acc_after = _accuracy(small, xp, yp, 256)
        current = small
        size_now = file_size(current) if size_limit is not None else None
        measured_ratio = float("nan")
        if check:
            t_check = time.perf_counter()
            ms = time_tflite({"dense": dense_file(), "step": tflite_bytes(current)}, table.threads, rounds=20, block=10)[0]
            measured_ratio = ms["step"] / ms["dense"]
            clock["check"] = time.perf_counter() - t_check
        step = SearchStep(iteration=it, group=name, removed=count, predicted_ms=float(pred), proxy_accuracy=float(acc),
                          accuracy=float(acc_after), proposals=scored_total, seconds=time.perf_counter() - t_it, kind=kind,
                          measured_ratio=measured_ratio, params=int(current.count_params()), step_ms=float(delta),
                          finetune_steps=step_tune, file_bytes=int(size_now or 0))
        steps.append(step)
        clock["iteration"] = step.seconds
        state["steps"] = [s.to_dict() for s in steps]
        if state_dir:
            _save_state(state_dir, current, state)
        cut = f"{name} -{count} channels" if kind == "channels" else f"removed {kind} {name} ({count} layers)"
        seen = f", measured {measured_ratio:.3f}x" if check else ""
        say(f"[compress] step {it}: {cut} -> {pred:.4f} ms ({pred / dense_pred:.3f}x{seen}), proxy {acc:.4f}, "
            f"after fine-tuning {acc_after:.4f} ({scored_total} proposals, {step.seconds:.0f} s)")
    search_seconds = time.perf_counter() - t_start
    final = current
    fine_tune(final, train, final_steps, learning_rate, batch_size, seed * 100003 + 99991, loss_spec.loss)
    final_acc = _accuracy(final, xv, yv, 256)
    final_pred = LatencyCost(channel_graph(final), table).estimate()
    final_file = tflite_bytes(final)
    measured = time_tflite({"dense": dense_file(), "final": final_file}, table.threads, rounds=20, block=10)[0]
    export_report, file_choice = None, None
    if out is not None:
        export_report, file_choice = _write_file(final, out, quantize, x_cal[:256], (xv, yv), dense_acc, max_accuracy_drop,
                                                 table.threads, say, size_limit=size_limit)
    if keras3_in:
        from tfprune.keras3.convert import to_keras3

        final = to_keras3(final)
    result = CompressResult(
        model=final, steps=steps, latency_kind=latency_kind, latency_budget=float(budget_value), budget_ms=float(goal),
        dense_predicted_ms=float(dense_pred), final_predicted_ms=float(final_pred), dense_ms=float(measured["dense"]),
        dense_proposal_accuracy=dense_proposal_acc,
        final_ms=float(measured["final"]), dense_accuracy=dense_acc, final_accuracy=final_acc, max_accuracy_drop=max_accuracy_drop,
        search_seconds=search_seconds, total_seconds=time.perf_counter() - t_start, threads=table.threads, device=table.device,
        export=export_report, out=out, file_choice=file_choice, final_steps=final_steps, stop_reason=stop_reason,
        dense_params=int(model.count_params()), final_params=int(final.count_params()), dense_bytes=len(dense_file()),
        final_float_bytes=len(final_file), size_budget=size_limit, size_format=size_format if size_limit is not None else None,
    )
    if verbose:
        say(result.table())
    return result
