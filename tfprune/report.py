"""One report base for every tfprune result: plain-text and markdown tables sized to their content.

`format_table(headers, rows)` renders a plain-text table whose column widths
come from the longest cell, so any layer name fits; `format_markdown` renders
the same rows as a GitHub markdown table. `Report` is a mixin for result
dataclasses: a subclass lists its content in ``_blocks()`` (text lines and
`Table` objects) and gets ``table()``, ``to_markdown()``, ``to_dict()``
(JSON-safe: numpy scalars and arrays converted, non-finite floats -> None) and
``__str__``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["Report", "Table", "format_table", "format_markdown", "format_cell", "json_safe"]

_ALIGNS = {"l": "<", "<": "<", "left": "<", "r": ">", ">": ">", "right": ">", "c": "^", "^": "^", "center": "^"}


def format_cell(value: Any, float_format: str = ".4g") -> str:
    """One cell as text: None -> "", bools -> yes/no, floats with ``float_format``, the rest ``str``."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format(float(value), float_format)
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _alignments(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | Sequence[str] | None) -> list[str]:
    """Per-column format alignment ("<", ">", "^"); by default numbers right, text left."""
    n = len(headers)
    if align is None:
        out = []
        for j in range(n):
            cells = [r[j] for r in rows if j < len(r) and r[j] is not None and r[j] != ""]
            out.append(">" if cells and all(_is_number(c) for c in cells) else "<")
        return out
    items = list(align) if isinstance(align, str) else list(align)
    if len(items) != n:
        raise ValueError(f"align has {len(items)} entries for {n} columns; give one of l/r/c per column (e.g. {'l' + 'r' * (n - 1)!r})")
    out = []
    for a in items:
        if a not in _ALIGNS:
            raise ValueError(f"unknown alignment {a!r}; use 'l', 'r' or 'c' (or '<', '>', '^')")
        out.append(_ALIGNS[a])
    return out


def _check_rows(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    for i, r in enumerate(rows):
        if len(r) != len(headers):
            raise ValueError(f"row {i} has {len(r)} cells for {len(headers)} headers {list(headers)}: {list(r)!r}")


def format_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    align: str | Sequence[str] | None = None,
    float_format: str = ".4g",
    sep: str = "  ",
) -> str:
    """A plain-text table; each column is as wide as its widest cell (header included).

    Args:
      headers: column titles.
      rows: one sequence of cells per row (strings, numbers, None for empty).
        Pre-format a number as a string to choose its precision.
      align: one of ``l``/``r``/``c`` per column (a string like ``"lrr"`` or a
        list); default: columns whose cells are all numbers right, others left.
      float_format: format spec for float cells that are not pre-formatted.
      sep: text between columns.
    """
    rows = [list(r) for r in rows]
    headers = [str(h) for h in headers]
    _check_rows(headers, rows)
    aligns = _alignments(headers, rows, align)
    text = [[format_cell(c, float_format) for c in r] for r in rows]
    widths = [max([len(headers[j])] + [len(r[j]) for r in text]) for j in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return sep.join(format(c, f"{a}{w}") for c, a, w in zip(cells, aligns, widths)).rstrip()

    out = [line(headers), sep.join("-" * w for w in widths)]
    out += [line(r) for r in text]
    return "\n".join(out)


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def format_markdown(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    align: str | Sequence[str] | None = None,
    float_format: str = ".4g",
) -> str:
    """The same table as GitHub-flavoured markdown (``|`` in cells escaped, alignment in the rule row)."""
    rows = [list(r) for r in rows]
    headers = [str(h) for h in headers]
    _check_rows(headers, rows)
    aligns = _alignments(headers, rows, align)
    rule = {"<": ":---", ">": "---:", "^": ":---:"}
    out = ["| " + " | ".join(_md_escape(h) for h in headers) + " |", "|" + "|".join(rule[a] for a in aligns) + "|"]
    for r in rows:
        out.append("| " + " | ".join(_md_escape(format_cell(c, float_format)) for c in r) + " |")
    return "\n".join(out)


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples, sets, paths and enums made JSON-serialisable.

    Non-finite floats become None (strict JSON has no NaN); dict keys become strings;
    objects JSON cannot represent otherwise become their ``str``.
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, enum.Enum):
        return json_safe(value.value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Report):  # a nested report: its own fields and derived values
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return [json_safe(v) for v in sorted(value, key=str)]
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return str(value)


@dataclass
class Table:
    """A block of a report: headers, rows and (optional) alignment, as for `format_table`."""

    headers: Sequence[str]
    rows: list[Sequence[Any]]
    align: str | Sequence[str] | None = None


class Report:
    """Mixin for result objects: ``table()``, ``to_markdown()``, ``to_dict()``, ``str()``.

    A subclass implements ``_blocks()``: a list of text lines (str) and
    `Table` objects, in display order. ``to_dict()`` converts the dataclass
    fields (JSON-safe); override ``_extra_dict()`` to add derived values.
    """

    def _blocks(self) -> list[str | Table]:
        raise NotImplementedError(f"{type(self).__name__} must implement _blocks() (text lines and Table objects)")

    def _extra_dict(self) -> dict[str, Any]:
        return {}

    def table(self) -> str:
        """Plain text: the report's lines and tables, columns sized to their content."""
        out = []
        for b in self._blocks():
            out.append(format_table(b.headers, b.rows, b.align) if isinstance(b, Table) else str(b))
        return "\n".join(out)

    def to_markdown(self) -> str:
        """Markdown: text lines as paragraphs, tables as GitHub tables."""
        out: list[str] = []
        for b in self._blocks():
            out.append(format_markdown(b.headers, b.rows, b.align) if isinstance(b, Table) else str(b))
        return "\n\n".join(out) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """The fields (and ``_extra_dict()``) as plain JSON-serialisable values.

        Fields declared with ``repr=False`` (live objects such as Keras layers) are left out.
        """
        if dataclasses.is_dataclass(self):
            d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}
        else:
            d = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        d.update(self._extra_dict())
        return json_safe(d)

    def __str__(self) -> str:
        return self.table()
