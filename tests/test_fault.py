"""A training process SIGKILLed mid-ramp and restarted from its BackupAndRestore backup ends bit for bit where an uninterrupted run ends.

Per granularity (weights: ``wrap`` + ``Pruning(0.6)``; channels: ``wrap(granularity="channel")`` + ``Pruning(macs=0.4)``),
three fresh processes of ``scripts/fault_pruning.py`` (deterministic: seeded, op determinism, one thread, ``shuffle=False``):

a. uninterrupted: 5 epochs of 8 steps, the default ramp (steps 0 -> 28);
b. the same run, killed by SIGKILL from a callback at the end of batch 3 of epoch 1 (pruning step 12: mid-ramp, mid-epoch;
   the backup of epoch 0, step 8, is on disk): no Python cleanup, no ``on_train_end``;
c. the same command again with b's backup directory: BackupAndRestore restores epoch 0's end, the run redoes epoch 1 and finishes.

c's variables (kernels, biases, BatchNorm statistics, masks / keep-vectors, channel ranks, step counters, schedules, and the optimizer's
moments and iterations) equal a's exactly, and c resumed (it did not plan again, it started at epoch 1, and it reached the targets).
The kill comes from the training loop itself at a fixed batch, never from a timer.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

SCRIPTS = Path(__file__).parent / "scripts"
SCRIPT = SCRIPTS / "fault_pruning.py"
KILL_EPOCH, KILL_BATCH = 1, 3  # 8 steps per epoch: killed after pruning step 12 of 28; epoch 0's backup holds step 8
STEPS_PER_EPOCH, EPOCHS = 8, 5


def _env() -> dict:
    """The script imports the tfprune of this checkout (not whichever one an editable install points at)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    env["PYTHONPATH"] = os.pathsep.join([str(SCRIPTS.parent.parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _start(granularity: str, backup: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), granularity, str(backup), str(out), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=SCRIPTS)


def _wait(*procs: subprocess.Popen) -> list[tuple[int, str]]:
    """(returncode, stderr) of each process; none is left running."""
    out = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=600)
            out.append((p.returncode, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def _files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()) if d.exists() else []


def _backup_state(backup: Path) -> tuple[int, list[int], int]:
    """Epoch saved in the backup, the pruning steps of its wrappers, and the zeros of its masks / keep-vectors."""
    reader = tf.train.load_checkpoint(str(backup / "chief"))
    keys = reader.get_variable_to_shape_map()
    epoch = int(reader.get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    steps = [int(reader.get_tensor(k)) for k in sorted(keys) if k.startswith("model/") and "/pruning_step/" in k]
    zeros = sum(int(np.count_nonzero(reader.get_tensor(k) == 0)) for k in keys
                if k.startswith("model/") and ("/mask/" in k or "/keep/" in k) and "optimizer" not in k)
    return epoch, steps, zeros


# ~26 s and ~17 s (three TensorFlow starts each): make test-all. The default suite resumes exactly through BackupAndRestore after an
# interruption (tests/test_callback.py, tests/test_keras3.py); these add the killed process.
@pytest.mark.slow
@pytest.mark.parametrize("granularity", ["unstructured", "channel"])
def test_sigkill_mid_ramp_then_restart_equals_the_uninterrupted_run(tmp_path, granularity):
    # a. uninterrupted and b. killed mid-ramp: two independent processes, run side by side
    backup, out = tmp_path / "backup", tmp_path / "run"
    (ref_rc, ref_err), (killed_rc, killed_err) = _wait(
        _start(granularity, tmp_path / "backup-ref", tmp_path / "ref"),
        _start(granularity, backup, out, "--kill-at-epoch", str(KILL_EPOCH), "--kill-at-batch", str(KILL_BATCH)))
    assert ref_rc == 0, ref_err[-3000:]
    ref_info = json.loads((tmp_path / "ref.json").read_text())
    assert ref_info["action"] == "planned" and ref_info["first_epoch"] == 0
    assert ref_info["step"] == STEPS_PER_EPOCH * EPOCHS and ref_info["begin_step"] == 0
    assert STEPS_PER_EPOCH * (KILL_EPOCH + 1) < ref_info["end_step"] < STEPS_PER_EPOCH * EPOCHS  # the kill is before the ramp's end
    assert ref_info["pruned"] == ref_info["target"] and sum(ref_info["target"].values()) > 0

    # b. killed by SIGKILL, mid-ramp
    assert killed_rc == -signal.SIGKILL, (killed_rc, killed_err[-3000:])
    assert not (tmp_path / "run.npz").exists() and not (tmp_path / "run.json").exists()  # it never got to the end
    at = json.loads((tmp_path / "run.killed.json").read_text())
    assert (at["epoch"], at["batch"], at["first_epoch"]) == (KILL_EPOCH, KILL_BATCH, 0)
    assert at["step"] == STEPS_PER_EPOCH * KILL_EPOCH + KILL_BATCH + 1
    assert (at["begin_step"], at["end_step"], at["target"]) == (0, ref_info["end_step"], ref_info["target"])  # the same plan as a
    assert at["begin_step"] < at["step"] < at["end_step"]
    pruned, target = sum(at["pruned"].values()), sum(at["target"].values())
    assert 0 < pruned < target, "killed mid-ramp: partly pruned"
    # the backup survived the kill: epoch 0's end, itself mid-ramp (fewer zeros than at the kill)
    assert at["backup_files"] and _files(backup) == at["backup_files"] and any(f.endswith(".index") for f in at["backup_files"])
    epoch, steps, zeros = _backup_state(backup)
    assert epoch == KILL_EPOCH - 1 and steps and set(steps) == {STEPS_PER_EPOCH * KILL_EPOCH}
    assert 0 < zeros < pruned

    # c. restarted with the same backup directory, to the end
    [(rc, err)] = _wait(_start(granularity, backup, out))
    assert rc == 0, err[-3000:]
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["action"] == "resumed" and not info["planned_here"], "the restart continues the saved ramp; it never plans again"
    assert info["first_epoch"] == KILL_EPOCH, "BackupAndRestore restarted at the killed epoch, not at 0"
    assert (info["step"], info["begin_step"], info["end_step"]) == (ref_info["step"], 0, ref_info["end_step"])
    assert info["pruned"] == info["target"] == ref_info["target"], "the resumed ramp reached the targets"
    if granularity == "unstructured":
        assert info["masked"] == info["pruned"] and info["sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert _files(backup) == [], "a finished run deletes its backup"

    a, c = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "run.npz")
    assert a.files == c.files
    masks = [k for k in a.files if k.endswith(("/mask:0", "/keep:0"))]
    assert masks and any(np.count_nonzero(a[k] == 0) for k in masks)
    assert any(k.startswith("optimizer/") for k in a.files)
    differ = [k for k in a.files if not np.array_equal(a[k], c[k])]
    assert not differ, f"restarted run differs from the uninterrupted one in {differ}"
