"""The ``tfprune`` command's entry point: runs `tfprune.cli.main` with TensorFlow's start-up log lines filtered out of stderr.

Importing TensorFlow prints C++ log lines (absl's "All log messages before
absl::InitializeLog()", oneDNN, "Could not find cuda drivers", CPU feature
notes) that ``TF_CPP_MIN_LOG_LEVEL`` does not silence. They would bury the
command's own one-line error. This module lives outside the ``tfprune``
package because importing anything inside it imports TensorFlow first.
Only lines matching those start-up notices are dropped; everything else
written to stderr, Python or C++, passes through. ``--debug`` (or
``TFPRUNE_CLI_RAW=1``) shows stderr unfiltered.
"""

from __future__ import annotations

import os
import re
import sys
import threading

NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:. ]+\d+ (port|cudart_stub|cpu_feature_guard|cuda_platform|cuda_executor|cuda_diagnostics|util)\.cc:\d+\] .*"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow with the appropriate compiler flags\.)$"
)

__all__ = ["main", "NOISE"]


def _forward(read_fd: int, write_fd: int) -> None:
    """Copy lines from ``read_fd`` to ``write_fd``, dropping TensorFlow's start-up notices, until end of file."""
    with os.fdopen(read_fd, "rb", buffering=0) as src:
        pending = b""
        while True:
            chunk = src.read(65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            out = b"".join(line + b"\n" for line in lines if not NOISE.match(line.decode("utf-8", "replace")))
            if out:
                os.write(write_fd, out)
        if pending and not NOISE.match(pending.decode("utf-8", "replace")):
            os.write(write_fd, pending)


def main() -> int:
    """``tfprune ...``: the CLI, stderr filtered (see the module docstring)."""
    if "--debug" in sys.argv[1:] or os.environ.get("TFPRUNE_CLI_RAW"):
        from tfprune.cli import main as cli_main

        return cli_main()
    sys.stderr.flush()
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    thread = threading.Thread(target=_forward, args=(read_fd, saved), daemon=True)
    thread.start()
    try:
        from tfprune.cli import main as cli_main

        return cli_main()
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer closes: the thread sees end of file
        thread.join(timeout=10)
        os.close(saved)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
