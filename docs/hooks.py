"""mkdocs hooks for the tfprune docs (not a page: excluded in mkdocs.yml).

`mkdocs build --strict` fails on every warning, which is what catches a broken API
reference. Griffe also warns about Google-style ``Args:`` entries that document several
parameters on one line (``importance, allocation, min_channels: ...``), a style some of
tfprune's docstrings use on purpose. Those entries still render (as text), so this hook
logs that one warning at INFO instead; every other warning still fails the build.
"""

from __future__ import annotations

import logging

_BENIGN = ("Failed to get 'name: description' pair",)


class _Downgrade(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and any(m in record.getMessage() for m in _BENIGN):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def on_startup(command: str, dirty: bool) -> None:
    logging.getLogger("mkdocs.plugins.griffe").addFilter(_Downgrade())
