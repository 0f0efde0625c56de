"""Layer selectors of ``include=`` / ``exclude=``: layer names, regexes (full match) or layer classes (any Keras)."""

from __future__ import annotations

import re
from typing import Any, Iterable

__all__ = ["as_selectors", "selector_matches", "check_selectors_match"]


def as_selectors(value: Any, argname: str) -> list[Any] | None:
    """``value`` as a list of selectors (None stays None); anything else is a TypeError naming ``argname``."""
    if value is None:
        return None
    if isinstance(value, (str, type, re.Pattern)):
        value = [value]
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"`{argname}` must be a layer name, a regex, a layer class, or a list of them; got {value!r}") from None
    for item in items:
        if not isinstance(item, (str, type, re.Pattern)):
            raise TypeError(f"`{argname}` entries must be names, regexes or layer classes; got {item!r}")
    return items


def selector_matches(layer: Any, selectors: list[Any]) -> bool:
    """True when ``layer`` matches one of ``selectors`` (its name equals or fully matches, or it is an instance)."""
    for sel in selectors:
        if isinstance(sel, type):
            if isinstance(layer, sel):
                return True
        elif isinstance(sel, re.Pattern):
            if sel.fullmatch(layer.name):
                return True
        elif sel == layer.name or re.fullmatch(sel, layer.name):
            return True
    return False


def check_selectors_match(layers: Iterable[Any], selectors: list[Any] | None, argname: str, model_name: str) -> None:
    """A name or regex that matches none of ``layers`` is a typo: refuse it (it would select silently nothing)."""
    if not selectors:
        return
    layers = list(layers)
    names = sorted({layer.name for layer in layers})
    missing = [s.pattern if isinstance(s, re.Pattern) else s for s in selectors
               if not isinstance(s, type) and not any(selector_matches(layer, [s]) for layer in layers)]
    if missing:
        shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
        raise ValueError(f"{argname}={missing} matches no layer of model {model_name!r}. Fix: use layer names (or regexes) from: {shown}")
