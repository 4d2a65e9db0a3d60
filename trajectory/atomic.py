"""Atomic writes: a file or a folder appears whole under its final name, or not at all.

Everything is first written under a temporary name in the destination's own folder (so the final rename
never crosses a filesystem), then renamed into place with ``os.replace``; a crash or ``kill -9`` leaves
the old content or the new, never half of either, and a leftover ``.tmp-*`` never looks like a result.
Files get the permissions the process's umask gives a new file (``mkstemp`` alone would make them 0600,
unreadable to a group sharing the store).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError


def _umask_mode(base: int) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # ".tmp-<random>.tmp": a leftover never matches a glob for results (``*.parquet``, ``*.json``)
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, _umask_mode(0o666))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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
