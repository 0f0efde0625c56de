"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import os


def write_markdown(json_path: str, lines: list[str]) -> str:
    """Write ``lines`` to the .md file beside ``json_path``, print it, and return the text."""
    md = "\n".join(lines) + "\n"
    with open(os.path.splitext(json_path)[0] + ".md", "w") as f:
        f.write(md)
    print(md)
    return md
