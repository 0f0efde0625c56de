"""CLI errors in one line (issue 20 item 6).

Every failure caused by the user's input (a bad option value, a missing, damaged
or wrong-format MODEL, --data that cannot be read or does not fit the model, an
output that cannot be written) prints ONE line on stderr naming the option or
argument and the fix, with exit status 2; option values are refused before any
model is loaded or trained; ``--debug`` adds the traceback.
"""

import os
import shutil
import subprocess
import sys
import uuid

import numpy as np
import pytest

import tfprune
from tfprune import cli
from tfprune._keras import keras


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """A folder with a tiny model (4 inputs, 3 classes), damaged and foreign model files, data files and a --data module."""
    root = tmp_path_factory.mktemp("cli_errors")
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(3, name="out")(keras.layers.Dense(8, activation="relu", name="fc")(inp)))
    model.save(str(root / "m.keras"))
    model.save(str(root / "m.h5"))
    raw = (root / "m.keras").read_bytes()
    (root / "trunc.keras").write_bytes(raw[: len(raw) // 2])
    h5 = (root / "m.h5").read_bytes()
    (root / "trunc.h5").write_bytes(h5[: len(h5) // 2])
    import zipfile

    with zipfile.ZipFile(root / "m.keras") as z:  # damage the weights inside an intact archive: config.json still reads
        info = z.getinfo("model.weights.h5")
    bad = bytearray(raw)
    start = info.header_offset + 60
    bad[start:start + 400] = b"\xff" * 400
    (root / "badweights.keras").write_bytes(bytes(bad))
    rng = np.random.default_rng(0)
    x = rng.random((20, 4), dtype=np.float32)
    np.savez(root / "data.npz", x=x, y=np.arange(20) % 3)
    np.savez(root / "wide.npz", x=rng.random((20, 5), dtype=np.float32), y=np.arange(20) % 3)
    np.savez(root / "labels.npz", x=x, y=np.arange(20))
    np.savez(root / "xonly.npz", x=x)
    np.savez(root / "nokeys.npz", a=np.zeros(3))
    np.savez(root / "mnistlike.npz", x=x)
    (root / "trunc.npz").write_bytes((root / "data.npz").read_bytes()[:100])
    (root / "notes.txt").write_text("not a model\n")
    (root / "folder").mkdir()
    (root / "empty_images").mkdir()
    mod = f"cli_err_data_{uuid.uuid4().hex[:8]}"
    (root / f"{mod}.py").write_text(
        "import numpy as np\n"
        "def boom():\n    raise RuntimeError('the user code failed')\n"
        "def nothing():\n    return None\n"
        "def text():\n    return 'abc'\n"
        f"def ok():\n    d = np.load({str(root / 'data.npz')!r})\n    return d['x'], d['y']\n"
    )
    sys.path.insert(0, str(root))
    yield {"root": str(root), "mod": mod}
    sys.path.remove(str(root))


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if a command loads a model or trains: the option must be refused before that."""
    def forbidden(*a, **k):
        raise AssertionError("a model was loaded (or the demo ran) before the options were checked")

    from tfprune import demo

    monkeypatch.setattr(tfprune, "load_model", forbidden)
    monkeypatch.setattr(demo, "run_demo", forbidden)


def one_line(capsys, argv, *needles):
    """Run the CLI in-process: exit 2, exactly one non-empty stderr line, naming ``needles`` and a fix, no traceback."""
    rc = cli.main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1, err
    line = lines[0]
    assert "Traceback" not in err and line.startswith("tfprune")
    assert "Fix" in line, line
    for n in needles:
        assert n in line, (n, line)
    return line


def _fill(d, args):
    return [a.format(**d) for a in args]


# ---------------------------------------------------------- option values
OPTION_CASES = [
    (["demo", "--sparsity", "1.5"], ["--sparsity", "1.5", "[0, 1)"]),
    (["demo", "--sparsity", "nan"], ["--sparsity", "nan"]),
    (["demo", "--epochs", "0"], ["--epochs", ">= 1"]),
    (["demo", "--prune-epochs", "two"], ["--prune-epochs", "'two'"]),
    (["demo", "--allocation", "nope"], ["--allocation", "unknown allocation 'nope'"]),
    (["demo", "--data", "{root}/missing.npz"], ["--data", "no such file"]),
    (["demo", "--data", "{root}/mnistlike.npz"], ["--data", "x_train"]),
    (["demo", "--out", "{root}/notes.txt"], ["--out", "is a file"]),
    (["plan", "m.keras", "--sparsity", "inf"], ["--sparsity", "'inf'"]),
    (["plan", "m.keras", "--macs", "-0.1", "--granularity", "channel"], ["--macs", "[0, 1)"]),
    (["plan", "m.keras", "--params", "1"], ["--params"]),
    (["plan", "m.keras", "--granularity", "3:x"], ["--granularity", "3:x"]),
    (["plan", "m.keras", "--granularity", "frozen"], ["--granularity frozen"]),
    (["plan", "m.keras", "--allocation", "nope"], ["--allocation", "unknown allocation 'nope'"]),
    (["plan", "m.keras", "--importance", "nope"], ["--importance", "nope"]),
    (["plan", "m.keras", "--importance", "capacity_activation"], ["--importance", "--data"]),
    (["plan", "m.keras", "--granularity", "channel", "--importance", "capacity"], ["--importance", "channel importance"]),
    (["plan", "m.keras", "--granularity", "channel", "--sparsity", "0.5"], ["--sparsity", "--macs"]),
    (["plan", "m.keras", "--macs", "0.5"], ["--macs", "--granularity channel"]),
    (["plan", "m.keras", "--sparsity", "0.5", "--params", "0.5"], ["--sparsity and --params"]),
    (["plan", "m.keras", "--x-key", "x"], ["--x-key", "--data"]),
    (["analyze", "m.keras", "--sparsity", "1"], ["--sparsity"]),
    (["analyze", "m.keras", "--delta", "-0.1"], ["--delta"]),
    (["analyze", "m.keras", "--plot", "{root}/p.xyz"], ["--plot", ".xyz", ".png"]),
    (["analyze", "m.keras", "--plot", "{root}/folder"], ["--plot", "is a folder"]),
    (["analyze", "m.keras", "--data", "{root}/missing.npz"], ["--data", "no such file"]),
    (["analyze", "m.keras", "--data", "{root}/notes.txt"], ["--data", ".npz"]),
    (["analyze", "m.keras", "--data", "{root}/data.npz", "--y-key", "y"], ["--y-key", "--x-key"]),
    (["analyze", "m.keras", "--data", "{mod}:ok", "--x-key", "x"], ["--x-key", "module:function"]),
    (["obs", "m.keras", "--data", "{root}/data.npz", "--out", "o.keras", "--keep", "abc"], ["--keep", "'abc'"]),
    (["obs", "m.keras", "--data", "{root}/data.npz", "--out", "o.keras", "--keep", "0.5,nan"], ["--keep", "nan", "(0, 1]"]),
    (["obs", "m.keras", "--data", "{root}/data.npz", "--out", "o.keras", "--keep", "0.5,1.5"], ["--keep", "1.5"]),
    (["obs", "m.keras", "--data", "{root}/data.npz", "--out", "o.keras", "--keep", "0,0.5"], ["--keep", "'0'"]),
    (["obs", "m.keras", "--data", "{root}/data.npz", "--out", "o.keras"], ["--keep", "--sparsity", "--tolerance"]),
    (["obs", "m.keras", "--data", "{root}/data.npz", "--out", "o.keras", "--sparsity", "0.5", "--tolerance", "1"], ["--sparsity and --tolerance"]),
    (["obs", "m.keras", "--data", "{root}/data.npz", "--out", "o.keras", "--tolerance", "-1"], ["--tolerance", ">= 0"]),
    (["obs", "m.keras", "--data", "{root}/data.npz", "--out", "o.keras", "--sparsity", "0.5", "--n-samples", "0"], ["--n-samples"]),
    (["obs", "m.keras", "--data", "{root}/data.npz", "--out", "o.keras", "--sparsity", "0.5", "--retrain", "-1"], ["--retrain"]),
    (["obs", "m.keras", "--data", "{root}/data.npz", "--out", "{root}/folder", "--sparsity", "0.5"], ["--out", "is a folder"]),
    (["obs", "m.keras", "--data", "{root}/data.npz", "--out", "{root}/no/such/o.keras", "--sparsity", "0.5"], ["--out", "does not exist"]),
    (["obs", "m.keras", "--sparsity", "0.5", "--out", "o.keras"], ["--data", "required"]),
    (["obs", "m.keras", "--data", "{root}/data.npz", "--sparsity", "0.5"], ["--out", "required"]),
    (["shallow", "m.keras", "--data", "{root}/data.npz", "--out", "s.keras", "--tau", "-0.1"], ["--tau", ">= 0"]),
    (["shallow", "m.keras", "--data", "{root}/data.npz", "--out", "s.keras", "--tau", "nan"], ["--tau"]),
    (["shallow", "m.keras", "--data", "{root}/data.npz", "--out", "s.keras", "--target-flops", "1"], ["--target-flops"]),
    (["shallow", "m.keras", "--data", "{root}/data.npz", "--out", "s.keras", "--n-samples", "2"], ["--n-samples", ">= 4"]),
    (["shallow", "m.keras", "--data", "{root}/data.npz", "--out", "s.keras", "--distill-epochs", "-1"], ["--distill-epochs"]),
    (["shallow", "m.keras", "--data", "{root}/data.npz", "--out", "s.keras", "--temperature", "0"], ["--temperature", "> 0"]),
    (["shallow", "m.keras", "--data", "{root}/data.npz", "--out", "s.keras", "--temperature", "inf"], ["--temperature"]),
    (["shallow", "m.keras", "--data", "{root}/data.npz", "--out", "s.keras", "--alpha", "1.5"], ["--alpha", "[0, 1]"]),
    (["shallow", "m.keras", "--data", "{root}/data.npz", "--out", "{root}/folder"], ["--out", "is a folder"]),
    (["shallow", "m.keras", "--data", "{root}/data.npz", "--out", "s.keras", "--plot", "{root}/probes"], ["--plot", "extension"]),
    (["shallow", "m.keras", "--data", "{root}/data.npz", "--out", "s.keras", "--pooling", "mean"], ["--pooling", "invalid choice"]),
    (["channels", "m.keras", "--macs", "1.5"], ["--macs", "fraction removed"]),
    (["channels", "m.keras", "--params", "nan"], ["--params"]),
    (["channels", "m.keras", "--macs", "0.3", "--params", "0.3"], ["--macs and --params"]),
    (["channels", "m.keras", "--min-channels", "0"], ["--min-channels", ">= 1"]),
    (["channels", "m.keras", "--finetune-epochs", "-1"], ["--finetune-epochs"]),
    (["channels", "m.keras", "--finetune-epochs", "1"], ["--finetune-epochs 1 needs --data"]),
    (["channels", "m.keras", "--gradual-epochs", "2"], ["--gradual-epochs 2 needs --data"]),
    (["channels", "m.keras", "--batch-size", "0"], ["--batch-size"]),
    (["channels", "m.keras", "--lr", "0"], ["--lr", "> 0"]),
    (["channels", "m.keras", "--lr", "nan"], ["--lr"]),
    (["channels", "m.keras", "--importance", "nope"], ["--importance", "nope"]),
    (["channels", "m.keras", "--importance", "taylor"], ["--importance", "--data"]),
    (["channels", "m.keras", "--layer-importance", "nope"], ["--layer-importance"]),
    (["channels", "m.keras", "--allocation", "nope"], ["--allocation", "invalid choice"]),
    (["channels", "m.keras", "--out", "{root}/folder"], ["--out", "is a folder"]),
    (["export", "m.keras", "--out", "x.tflite", "--mode", "bogus"], ["--mode", "invalid choice"]),
    (["export", "m.keras", "--out", "x.tflite", "--mode", "int8"], ["--mode int8", "--data"]),
    (["export", "m.keras", "--out", "x.tflite", "--mode", "sparse", "--c-header", "m.h"], ["--c-header", "--mode micro"]),
    (["export", "m.keras", "--out", "{root}/folder", "--mode", "float"], ["--out", "is a folder"]),
    (["export", "m.keras", "--out", "x.tflite", "--mode", "float", "--c-header", "{root}/folder"], ["--c-header", "is a folder"]),
    (["layers"], ["MODEL", "required"]),
    ([], ["command"]),
    (["prune", "m.keras"], ["invalid choice: 'prune'"]),
]


@pytest.mark.parametrize("argv,needles", OPTION_CASES, ids=[" ".join(a[:1] + a[2:] if len(a) > 1 else a) for a, _ in OPTION_CASES])
def test_options_are_refused_in_one_line_before_any_work(d, no_loading, capsys, argv, needles):
    one_line(capsys, _fill(d, argv), *needles)


def test_demo_refuses_a_bad_sparsity_before_training(no_loading, capsys):
    line = one_line(capsys, ["demo", "--sparsity", "1.5"], "--sparsity")  # no_loading: refused before the demo starts
    assert line == "tfprune demo: error: argument --sparsity: '1.5' is not a fraction in [0, 1) (the fraction removed of the weights). " \
                   "Fix: give e.g. 0.9"


# ------------------------------------------------------------------ MODEL
MODEL_CASES = [
    ("trunc.keras", [], ["MODEL", "damaged .keras"]),
    ("trunc.h5", [], ["MODEL", "damaged .h5"]),
    ("badweights.keras", [], ["MODEL", "cannot be loaded", "BadZipFile"]),
    ("badweights.keras", ["--unsafe"], ["MODEL", "cannot be loaded"]),
    ("trunc.keras", ["--unsafe"], ["MODEL", "cannot be loaded"]),
    ("folder", [], ["MODEL", "folder without saved_model.pb"]),
    ("missing.keras", [], ["MODEL", "no model file"]),
    ("data.npz", [], ["MODEL", "without config.json"]),
    ("notes.txt", [], ["MODEL", "another format"]),
]


@pytest.mark.parametrize("name,extra,needles", MODEL_CASES, ids=[n + "".join(e) for n, e, _ in MODEL_CASES])
def test_damaged_missing_or_foreign_model_files(d, capsys, name, extra, needles):
    one_line(capsys, ["layers", os.path.join(d["root"], name), *extra], *needles)


def test_a_damaged_model_in_the_other_commands(d, capsys):
    bad = os.path.join(d["root"], "trunc.keras")
    data = os.path.join(d["root"], "data.npz")
    for argv in (["export", bad, "--out", os.path.join(d["root"], "x.tflite"), "--mode", "float"], ["plan", bad],
                 ["obs", bad, "--data", data, "--sparsity", "0.5", "--out", os.path.join(d["root"], "o.keras")]):
        one_line(capsys, argv, "MODEL", "damaged")


# ------------------------------------------------------------------- --data
DATA_CASES = [
    ("{mod}:boom", [], ["--data", "raised RuntimeError", "the user code failed"]),
    ("{mod}:nothing", [], ["--data", "returned None"]),
    ("{mod}:text", [], ["--data", "returned a str"]),
    ("{mod}:missing_function", [], ["--data", "cannot import"]),
    ("no_such_module_xyz:fn", [], ["--data", "cannot import"]),
    ("{root}/nokeys.npz", [], ["--data", "--x-key"]),
    ("{root}/data.npz", ["--x-key", "nope"], ["--data", "nope"]),
    ("{root}/trunc.npz", [], ["--data", "cannot be read"]),
    ("{root}/wide.npz", [], ["--data", "shape (5,)", "(4,)"]),
    ("{root}/labels.npz", [], ["--data", "labels run from 0 to 19", "3 outputs"]),
    ("{root}/xonly.npz", [], ["--data", "no labels"]),
    ("{root}/empty_images", [], ["--data", "No images"]),
]


@pytest.mark.parametrize("spec,extra,needles", DATA_CASES, ids=[s.split("/")[-1] + "".join(e) for s, e, _ in DATA_CASES])
def test_bad_data(d, capsys, spec, extra, needles):
    model = os.path.join(d["root"], "m.keras")
    one_line(capsys, ["analyze", model, "--data", spec.format(**d), *extra], *needles)


def test_bad_data_in_the_other_commands(d, capsys):
    model, root = os.path.join(d["root"], "m.keras"), d["root"]
    wide = os.path.join(root, "wide.npz")
    for argv in (["plan", model, "--data", wide], ["export", model, "--data", wide, "--mode", "float", "--out", f"{root}/x.tflite"],
                 ["obs", model, "--data", wide, "--sparsity", "0.5", "--out", f"{root}/o.keras"],
                 ["shallow", model, "--data", wide, "--out", f"{root}/s.keras"],
                 ["channels", model, "--data", wide, "--finetune-epochs", "1"]):
        one_line(capsys, argv, "--data", "shape (5,)")
    for command in (["shallow", model, "--out", f"{root}/s.keras"], ["obs", model, "--sparsity", "0.5", "--out", f"{root}/o.keras"]):
        one_line(capsys, [*command, "--data", os.path.join(root, "xonly.npz")], "--data", "no labels")
        one_line(capsys, [*command, "--data", f"{d['mod']}:nothing"], "--data", "returned None")


def test_good_data_from_a_function_still_works(d, capsys):
    assert cli.main(["plan", os.path.join(d["root"], "m.keras"), "--data", f"{d['mod']}:ok", "--sparsity", "0.5"]) == 0
    assert "plan: sparsity 0.5000" in capsys.readouterr().out


# ------------------------------------------------------------------ outputs
@pytest.fixture
def readonly_dir(tmp_path):
    """A folder nothing can be written in: chmod 555, or for root (who ignores modes) a read-only tmpfs."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    if shutil.which("mount") is None:
        pytest.skip("root ignores file modes, and mount(8) is missing for a read-only tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {r.stderr.strip()}")
    try:
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def test_unwritable_outputs_are_refused_before_any_work(d, readonly_dir, no_loading, capsys):
    ro, root = str(readonly_dir), d["root"]
    data = os.path.join(root, "data.npz")
    cases = [
        (["export", "m.keras", "--mode", "float", "--out", f"{ro}/m.tflite"], "--out"),
        (["export", "m.keras", "--mode", "micro", "--data", data, "--out", f"{root}/m.tflite", "--c-header", f"{ro}/m.h"], "--c-header"),
        (["obs", "m.keras", "--data", data, "--sparsity", "0.5", "--out", f"{ro}/o.keras"], "--out"),
        (["shallow", "m.keras", "--data", data, "--out", f"{ro}/s.keras"], "--out"),
        (["shallow", "m.keras", "--data", data, "--out", f"{root}/s.keras", "--plot", f"{ro}/p.png"], "--plot"),
        (["channels", "m.keras", "--out", f"{ro}/c.keras"], "--out"),
        (["analyze", "m.keras", "--plot", f"{ro}/a.png"], "--plot"),
        (["demo", "--out", f"{ro}/demo_out"], "--out"),
    ]
    for argv, option in cases:
        one_line(capsys, argv, option, "cannot write")


# -------------------------------------------------------------- the handler
def test_debug_shows_the_traceback(d, capsys):
    bad = os.path.join(d["root"], "trunc.keras")
    for argv in (["--debug", "layers", bad], ["layers", bad, "--debug"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert "Traceback (most recent call last)" in err and "BadZipFile" in err and len(lines) > 5
        assert lines[-1].startswith("tfprune layers: error: MODEL") and "Fix" in lines[-1]


def test_messages_of_any_length_are_one_line_and_bugs_keep_their_traceback(d, capsys, monkeypatch):
    import tensorflow as tf

    model = os.path.join(d["root"], "m.keras")

    def raising(err):
        def fn(*a, **k):
            raise err
        return fn

    monkeypatch.setattr(tfprune, "prunable_layers", raising(ValueError("first line\nsecond line\n\n  third")))
    line = one_line(capsys, ["layers", model], "first line second line third", "--debug")
    monkeypatch.setattr(tfprune, "prunable_layers", raising(tf.errors.InvalidArgumentError(
        None, None, "Graph execution error:\n\nDetected at node 'loss' defined at (most recent call last):\n  File \"train.py\", line 1\n"
        "Received a label value of 19 which is outside the valid range of [0, 3).  Label values: 19\n\t [[{{node loss}}]] "
        "[Op:__inference_train_function_123]")))
    line = one_line(capsys, ["layers", model], "Received a label value of 19", "--data")
    assert "File" not in line and "{{node" not in line and "Op:" not in line
    monkeypatch.setattr(tfprune, "prunable_layers", raising(RuntimeError("an internal bug")))
    with pytest.raises(RuntimeError, match="an internal bug"):  # not the user's input: the traceback is not hidden
        cli.main(["layers", model])


def test_the_installed_command_prints_exactly_one_stderr_line_for_a_user_error(tmp_path):
    """As a user runs it: a subprocess of the console script; TensorFlow's start-up log lines are filtered out (tfprune_console)."""
    import shutil
    import subprocess
    import sys

    exe = shutil.which("tfprune") or os.path.join(os.path.dirname(sys.executable), "tfprune")
    proc = subprocess.run([exe, "layers", str(tmp_path / "missing.keras")], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "TFPRUNE_CLI_RAW"})
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tfprune layers: error: MODEL: no model file") and "Fix" in lines[0]


def test_console_filter_drops_only_tensorflow_start_up_notices():
    import tfprune_console

    r, w = os.pipe()
    out_r, out_w = os.pipe()
    text = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1796534121.911943    6756 port.cc:153] oneDNN custom operations are on.\n"
        "I0000 00:00:1796534121.912345    6756 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.\n"
        "W0000 00:00:1796534121.912345    6756 some_other.cc:31] a real warning\n"
        "Traceback (most recent call last):\n"
        "tfprune plan: error: sparsity must be in [0, 1)"
    )
    os.write(w, text.encode())
    os.close(w)
    tfprune_console._forward(r, out_w)
    os.close(out_w)
    with os.fdopen(out_r) as f:
        kept = f.read()
    assert kept == ("W0000 00:00:1796534121.912345    6756 some_other.cc:31] a real warning\nTraceback (most recent call last):\n"
                    "tfprune plan: error: sparsity must be in [0, 1)")
