"""Copy the benchmark tables (benchmarks/results/*.md) into README.md between markers.

    python benchmarks/update_readme.py

Each section sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``
(or replaces a ``NAME_RESULTS_PLACEHOLDER`` line the first time), so the
README shows exactly what the committed scripts wrote.
"""

from __future__ import annotations

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, "..", "README.md")
SECTIONS = {
    "ALLOCATION": (["allocation.md", "global_ratio.md", "granularity.md"],
                   "python benchmarks/allocation.py; python benchmarks/global_ratio.py; python benchmarks/granularity.py --quick",
                   ["allocation.png", "global_ratio.png"]),
    "EXTREME": (["extreme_sparsity.md"], "python benchmarks/extreme_sparsity.py", []),
    "LOBS": (["lobs.md"], "python benchmarks/lobs.py", []),
    "SHALLOW": (["shallow.md"], "python benchmarks/shallow.py", ["shallow_plain_cnn_probes.png", "shallow_resnet20_probes.png"]),
    "BN": (["bn_reestimate.md"], "python benchmarks/bn_reestimate.py", []),
    "ANALYZE": (["analyze_speed.md"], "python benchmarks/analyze_speed.py", []),
    "STRUCTURED": (["structured.md"],
                   "python benchmarks/structured.py --skip-latency --models M --seeds 2 --train-epochs 4 --finetune-epochs 2 "
                   "--train-images 8000 --out benchmarks/results/structured_accuracy_M.json --resume (one per model, side by side); "
                   "python benchmarks/structured.py --skip-accuracy --out benchmarks/results/structured_latency.json; "
                   "python benchmarks/structured.py --merge benchmarks/results/structured_accuracy*.json "
                   "benchmarks/results/structured_latency.json --out benchmarks/results/structured.json",
                   ["structured.png"]),
}


def block(name: str) -> str | None:
    files, command, images = SECTIONS[name]
    parts = []
    for f in files:
        path = os.path.join(HERE, "results", f)
        if os.path.exists(path):
            parts.append(open(path).read().strip())
    if not parts:
        return None
    body = "\n\n".join(parts)
    body = re.sub(r"^# ", "#### ", body, flags=re.M)  # a results file's title must not become a top-level README heading
    pics = "".join(f"\n\n![{i}](benchmarks/results/{i})" for i in images if os.path.exists(os.path.join(HERE, "results", i)))
    head = f"Measured with `{command}` (2 CPU cores; JSON beside each table in `benchmarks/results/`):"
    return f"<!-- {name}:start -->\n{head}\n\n{body}{pics}\n<!-- {name}:end -->"


def main() -> int:
    text = open(README).read()
    for name in SECTIONS:
        b = block(name)
        if b is None:
            continue
        pattern = re.compile(rf"<!-- {name}:start -->.*?<!-- {name}:end -->", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _m, b=b: b, text)
        else:
            text = text.replace(f"{name}_RESULTS_PLACEHOLDER", b)
    open(README, "w").write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
