"""Files tfprune writes, written atomically: a temporary file in the same folder, renamed only when complete.

On any failure (a full disk, an error while writing) the temporary file is
removed and the target is left as it was: absent, or the previous complete
file. Every file tfprune writes (``.tflite``, C headers, ``.keras`` / ``.h5``
models, JSON reports, plots) goes through `atomic_write` or `atomic_path`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Any, Callable, Iterator

__all__ = ["atomic_write", "atomic_path", "save_model", "save_figure"]


def _target(path: str | os.PathLike) -> tuple[str, str]:
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path!r}: it is a directory. Fix: give a file name inside it")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path!r}: the folder {folder!r} does not exist. Fix: create it first")
    return path, folder


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path (same folder, same extension) to write; it replaces ``path`` when the block ends without error."""
    path, folder = _target(path)
    base = os.path.basename(path)
    stem, ext = os.path.splitext(base)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{ext}", dir=folder)
    os.close(fd)
    os.remove(tmp)  # writers such as Keras refuse or append to an existing file; they create it
    try:
        yield tmp
        if not os.path.exists(tmp):
            raise OSError(f"nothing was written to {tmp!r} for {path!r}")
        os.replace(tmp, path)
    except BaseException:
        if os.path.isdir(tmp):
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """``open(path, mode)`` that lands atomically: data go to a temporary file, flushed and synced, then renamed."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def save_model(model: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """``model.save(path)`` written atomically (``.keras`` and ``.h5`` files)."""
    with atomic_path(path) as tmp:
        model.save(tmp, **kwargs)


def save_figure(fig: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """``fig.savefig(path)`` written atomically (the format from ``path``'s extension)."""
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".") or None
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, **kwargs)


def write_with(path: str | os.PathLike, writer: Callable[[str], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result to ``path`` only if it returns."""
    with atomic_path(path) as tmp:
        writer(tmp)
