"""Package layout: no import cycles, no private names across modules, honest dependencies (read from the source with ``ast``)."""

from __future__ import annotations

import ast
import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tfprune"
sys.path.insert(0, str(ROOT / "tools"))

import import_cycles  # noqa: E402

# Private names imported across modules: (importing module, imported module, name). Empty, and the test
# fails on a stale entry, so it stays empty.
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str, str]] = set()


# The demo's model zoo (tfprune.models) is for the demo; library code takes what it needs from the library
# (tfprune.training.finetune.adam_cosine).
MAY_IMPORT_MODELS = {"tfprune", "tfprune.demo"}
KNOWN_MODELS_IMPORTERS: set[str] = set()

# Import name -> distribution name, where they differ beyond "_" vs "-".
DISTRIBUTIONS = {
    "sklearn": "scikit-learn",
    "google": "protobuf",
    "yaml": "pyyaml",
    "PIL": "pillow",
    "cv2": "opencv-python",
}


def test_import_cycles_script_reports_none():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "import_cycles.py"), str(PACKAGE)], capture_output=True, text=True)
    assert " 0 cycle(s)" in r.stdout, r.stdout
    assert import_cycles.cycles(import_cycles.import_graph(PACKAGE)) == []


def test_cycle_finder_finds_a_lazy_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from pkg.c import _g\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import d\nfrom . import a\n")
    (pkg / "d.py").write_text("import pkg.c\n")
    graph = import_cycles.import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.c"] == {"pkg.a"} and graph["pkg.d"] == {"pkg.c"}
    assert import_cycles.cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    assert import_cycles.shortest_cycle(graph, ["pkg.a", "pkg.c", "pkg.sub.b"]) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]
    assert [(i.source, i.target, i.names, i.lazy) for i in import_cycles.private_imports(pkg)] == [("pkg.sub.b", "pkg.c", ("_g",), True)]
    assert import_cycles.main([str(pkg)]) == 1


def test_no_private_names_imported_across_modules():
    found = {(i.source, i.target, n) for i in import_cycles.private_imports(PACKAGE) for n in i.names}
    assert found - KNOWN_PRIVATE_IMPORTS == set(), "import a public name instead (make it public in its module)"
    assert KNOWN_PRIVATE_IMPORTS - found == set(), "fixed: remove these entries from KNOWN_PRIVATE_IMPORTS"


def test_quantize_and_export_import_no_private_name():
    for imp in import_cycles.private_imports(PACKAGE):
        assert not imp.source.startswith(("tfprune.quantize", "tfprune.export")), imp


def test_profile_module_is_profiling():
    importers = {i.source for i in import_cycles.imports(PACKAGE) if i.target == "tfprune.profile"}
    assert importers == set(), "import tfprune.inventory.profiling (tfprune.profile is the function)"
    assert (PACKAGE / "inventory" / "profiling.py").is_file()


def test_library_code_does_not_import_the_model_zoo():
    importers = {i.source for i in import_cycles.imports(PACKAGE) if i.target == "tfprune.models"}
    assert importers - MAY_IMPORT_MODELS == KNOWN_MODELS_IMPORTERS, "use tfprune.training.finetune.adam_cosine (not tfprune.models.adam)"


def _requirement_name(line: str) -> str:
    return re.split(r"[=<>!~;\[ ]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _setup_cfg() -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(install_requires name -> line, extra -> (name -> line)) of setup.cfg."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")

    def parse(text: str) -> dict[str, str]:
        return {_requirement_name(ln): ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")}

    extras = {k: parse(v) for k, v in cfg["options.extras_require"].items()}
    return parse(cfg["options"]["install_requires"]), extras


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level import name -> modules of tfprune that import it (absolute imports outside the standard library and tfprune)."""
    out: dict[str, set[str]] = {}
    for name, path in import_cycles.module_files(PACKAGE).items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top != "tfprune" and top not in sys.stdlib_module_names and top != "__future__":
                    out.setdefault(top, set()).add(name)
    return out


def test_every_third_party_import_is_declared():
    required, extras = _setup_cfg()
    declared = set(required).union(*extras.values())
    imported = _third_party_imports()
    missing = {top: sorted(mods) for top, mods in imported.items() if DISTRIBUTIONS.get(top, top).lower().replace("_", "-") not in declared}
    assert not missing, f"declare these in setup.cfg install_requires (or an extra): {missing}"
    assert {"scipy", "threadpoolctl", "numpy", "tensorflow", "tf_keras", "tensorflow_model_optimization", "ai_edge_litert"} <= set(imported)
    # optional: TFLM only through the 'micro' extra; keras-cv is never imported by tfprune (the 'detectors' extra; tests use it)
    assert "tflite-micro" in extras["micro"] and "tflite-micro" not in required
    assert "keras_cv" not in imported and "keras-cv" not in required
    assert "keras-cv" in extras["detectors"] and "keras-cv" in extras["test"]


def test_requirements_are_pinned():
    required, extras = _setup_cfg()
    for name, line in [*required.items(), *(kv for e in extras.values() for kv in e.items())]:
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[a-z,]+\])?==[A-Za-z0-9_.\-]+", line), f"{name}: pin one version (name==version), got {line!r}"


PUBLIC_PACKAGES = ["tfprune", "tfprune.inventory", "tfprune.importance", "tfprune.allocation", "tfprune.planning", "tfprune.masks",
                   "tfprune.training", "tfprune.structured", "tfprune.obs", "tfprune.shallow", "tfprune.export"]


def test_top_level_api_is_small():
    import tfprune

    assert len(tfprune.__all__) <= 25 and len(set(tfprune.__all__)) == len(tfprune.__all__)
    assert all(hasattr(tfprune, n) for n in tfprune.__all__)


@pytest.mark.parametrize("package", PUBLIC_PACKAGES)
def test_public_names_have_docstrings_and_type_hints(package):
    import importlib
    import inspect

    mod = importlib.import_module(package)
    missing_doc, missing_hints = [], []
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name)
        if inspect.ismodule(obj) or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if not (obj.__doc__ or "").strip():
            missing_doc.append(name)
        fn = obj if inspect.isfunction(obj) else obj.__init__ if "__init__" in vars(obj) else None
        if fn is not None and inspect.isfunction(fn):
            params = [p for p in inspect.signature(fn).parameters.values() if p.name not in ("self", "cls")]
            if inspect.isfunction(obj) and "return" not in fn.__annotations__:
                missing_hints.append(f"{name} -> ?")
            missing_hints += [f"{name}({p.name})" for p in params if p.annotation is inspect.Parameter.empty
                              and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    assert not missing_doc, f"{package}: public names without a docstring: {missing_doc}"
    assert not missing_hints, f"{package}: public parameters without type hints: {missing_hints}"
