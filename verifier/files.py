"""Writing an output file where the user asked, whatever the path is.

- A new path, or a regular file: written to a temporary file beside it, then renamed over it
  (a reader never sees half a file; a failed write leaves the old one and no temporary).
- A symlink: the same, at the file it points to (the link stays a link).
- Anything else — a FIFO, a character device, `/dev/stdout`: written in place, never replaced
  (renaming over `/dev/null` as root would replace the device with a regular file).

Files that hold KV or D1 values (reports, SQL files, ledgers, snapshots) are created owner-only
(0600), as a snapshot always was, unless the caller says they hold nothing private (`--redact`).
A write error (a full disk, `/dev/full`) is an `OutputError` naming the path.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from verifier.errors import Kv2d1Error

PRIVATE_MODE = 0o600
SHARED_MODE = 0o644


class OutputError(Kv2d1Error):
    """An output file that cannot be written."""


@contextlib.contextmanager
def output_file(path: Path, *, private: bool = True, what: str = "the output") -> Iterator[TextIO]:
    """A text file to write `path` through; see the module docstring for what happens where."""
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise _error(path, what, exc) from exc
    if mode is not None and not stat.S_ISREG(mode):
        yield from _in_place(path, what)
        return
    yield from _replacing(target, path, private=private, what=what)


def _in_place(path: Path, what: str) -> Iterator[TextIO]:
    try:
        out = path.open("w", encoding="utf-8", newline="\n")
    except OSError as exc:
        raise _error(path, what, exc) from exc
    try:
        yield out
        out.flush()
    except OSError as exc:
        raise _error(path, what, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            out.close()


def _replacing(target: Path, asked: Path, *, private: bool, what: str) -> Iterator[TextIO]:
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial",
                                        dir=target.parent)  # fmt: skip
    except OSError as exc:
        raise _error(asked, what, exc) from exc
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, PRIVATE_MODE if private else SHARED_MODE)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _error(asked, what, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str, *, private: bool = True, what: str = "the output") -> None:
    """All of `text` to `path` (see `output_file`)."""
    with output_file(path, private=private, what=what) as out:
        out.write(text)


def _error(path: Path, what: str, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {what} {path}: {exc.strerror or exc}")
