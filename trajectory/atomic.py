"""Atomic writes: a file or a folder appears whole under its final name, or not at all.

Everything is first written under a temporary name in the destination's own folder (so the final rename
never crosses a filesystem), then renamed into place with ``os.replace``; a crash or ``kill -9`` leaves
the old content or the new, never half of either, and a leftover ``.tmp-*`` never looks like a result.
Files get the permissions the process's umask gives a new file (``mkstemp`` alone would make them 0600,
unreadable to a group sharing the store).

A write that finds its filesystem full raises one :class:`~trajectory.errors.DiskFullError` line naming the
path and the space left there (:func:`disk_full`), whatever the writer raised: an ``OSError`` with ENOSPC, a
polars error quoting "os error 28", or torch's ``unexpected pos`` with no errno at all (then the filesystem
having less than :data:`FULL_BELOW` bytes free is what says so).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError, DiskFullError, TrajectoryError, exception_chain

#: A failed write on a filesystem with less than this free is taken for a full disk (a writer may hide the errno).
FULL_BELOW = 1 << 20
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _umask_mode(base: int) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged writer may still use on ``folder``'s filesystem (0 when it cannot be asked)."""
    base = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    try:
        return shutil.disk_usage(base).free
    except OSError:
        return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _says_full(exc: BaseException) -> bool:
    return any(
        getattr(e, "errno", None) in NO_SPACE or "No space left" in str(e) or "os error 28" in str(e)
        for e in exception_chain(exc)
    )


@contextmanager
def disk_full(path: Path, cleanup: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Inside, a failed write to ``path`` on a full filesystem becomes one :class:`.DiskFullError` line; ``cleanup``
    (removing the partial temporary) runs before the free space is measured, so the line says what is free now."""
    try:
        yield
    except TrajectoryError:
        raise
    except Exception as exc:  # an OSError carries its errno; other writers' errors are judged by the space left
        full = _says_full(exc) or (not isinstance(exc, OSError) and free_bytes(path.parent) < FULL_BELOW)
        cleanup()
        if not full:
            raise
        raise DiskFullError(
            f"no space left on the device writing {path} ({_size(free_bytes(path.parent))} free there); "
            "free some space, or write to another folder"
        ) from None


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    tmp = None

    def cleanup() -> None:
        if tmp is not None:
            tmp.unlink(missing_ok=True)

    with disk_full(path, cleanup):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # ".tmp-<random>.tmp": a leftover never matches a glob for results (``*.parquet``, ``*.json``)
            fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=".tmp", dir=path.parent)
            os.close(fd)
            tmp = Path(name)
            write(tmp)
            os.chmod(tmp, _umask_mode(0o666))
            os.replace(tmp, path)
        finally:
            cleanup()
    return path


def atomic_bytes(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically."""
    raw = data.encode() if isinstance(data, str) else data
    return atomic_write(path, lambda tmp: tmp.write_bytes(raw))


def atomic_array(path: str | Path, array) -> Path:
    """Write a numpy array to ``path`` (``.npy`` format) atomically."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a handle: given a name, np.save would append ".npy" to it
            np.save(fh, array)

    return atomic_write(path, write)


def atomic_dir(path: str | Path, build: Callable[[Path], None], replace: bool = False) -> Path:
    """Call ``build(tmp)`` to fill a temporary folder beside ``path``, then rename it to ``path``.

    An existing ``path`` is kept (another process finished the same folder first) unless ``replace``.
    """
    path = Path(path)
    with disk_full(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))
        try:
            build(tmp)
            os.chmod(tmp, _umask_mode(0o777))
            if path.exists() and replace:  # the old folder leaves by one rename, the new one arrives by another
                trash = Path(tempfile.mkdtemp(prefix=".old-", dir=path.parent))
                os.replace(path, trash / path.name)
                os.replace(tmp, path)
                shutil.rmtree(trash, ignore_errors=True)
            elif not path.exists():
                os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def writable_folder(path: str | Path, what: str) -> Path:
    """``path`` if a folder can be written there, else a one-line :class:`.ConfigError`; creates nothing.

    A folder that exists must be writable; one that does not must have a nearest existing ancestor that is a
    writable folder.  Writable means :func:`os.access` allows it *and* a temporary folder can be made and
    removed there (root passes ``os.access`` on a read-only filesystem).  ``what`` names the option.
    """
    text = os.fspath(path)
    if not text or any(ord(c) < 32 for c in text):
        raise ConfigError(f"{what} {text!r} is not a usable folder path (empty, or it holds NUL or control characters)")
    target = Path(text).absolute()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{what} {text} is a file, not a folder; give a folder path")
    base = next(p for p in (target, *target.parents) if p.exists())
    if not base.is_dir():
        raise ConfigError(f"{what} {text} cannot be created: {base} is a file, not a folder")
    if not _can_write(base):
        raise ConfigError(f"{what} {text} is not writable (no permission to write in {base})")
    return Path(text)


def _can_write(folder: Path) -> bool:
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".tmp-probe-", dir=folder))
    except OSError:
        return False
    return True
