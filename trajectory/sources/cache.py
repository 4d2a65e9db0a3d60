"""Sharing the Hugging Face cache with its owner and with other sweeps: which weights a sweep may evict, when.

The cache is the user's.  A sweep evicts a revision's weights after measuring it (so a 154-revision sweep
holds a few revisions on disk, not ~58 GB), under four rules:

1. a weight file that was in the cache before the sweep asked for it is the user's and is never evicted;
2. a file a sweep downloaded is *marked* (``<cache>/.locks/<repo>/trajectory/<commit>.evict/<file>``), so
   that whichever sweep uses the snapshot last evicts it, even when another sweep downloaded it;
3. offline (``HF_HUB_OFFLINE=1``) and with ``--keep-weights`` nothing is evicted (``--keep-weights`` also
   clears the marks of what it used: the user asked to keep those weights);
4. every process using a snapshot holds a *lease*: a shared ``flock`` on ``<commit>.lock``, from before it
   looks at the files until it has measured them.  Eviction needs the exclusive lock, taken without
   waiting: when another process (or another lease of this one) holds the snapshot, it is left for that
   holder, who evicts it when it releases.  A process killed with ``kill -9`` drops its lease with its
   file descriptors; its marks stay, so the next sweep to release that snapshot evicts it.

A releaser takes the exclusive lock only after its marks are on disk and its shared lock is dropped, so of
two sweeps releasing one snapshot at once, at least one gets the exclusive lock and sees the marks.
Without ``fcntl`` (Windows) there are no leases and nothing is evicted: the safe side.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote, unquote

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def bookkeeping(storage: Path) -> Path:
    """``<cache>/.locks/<repo folder>/trajectory``: beside huggingface_hub's own per-blob locks."""
    return storage.parent / ".locks" / storage.name / "trajectory"


class Lease:
    """A shared lock on one snapshot (``commit``) of ``storage``, held until :meth:`close`."""

    def __init__(self, storage: Path, commit: str) -> None:
        self.storage, self.commit, self.fd = storage, commit, None
        if fcntl is None:
            return
        path = bookkeeping(storage) / f"{commit}.lock"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # a read-only cache (offline, shared): no lease, and so no eviction either
            return
        fcntl.flock(self.fd, fcntl.LOCK_SH)  # waits while another process evicts this snapshot

    @property
    def marks(self) -> Path:
        return bookkeeping(self.storage) / f"{self.commit}.evict"

    def mark(self, filename: str) -> None:
        """Record that a sweep downloaded ``filename`` of this snapshot (so a sweep may evict it)."""
        self.marks.mkdir(parents=True, exist_ok=True)
        (self.marks / quote(filename, safe="")).touch()

    def marked(self) -> list[str]:
        """The snapshot's files that a sweep downloaded and nobody has evicted or kept yet."""
        return sorted(unquote(p.name) for p in self.marks.iterdir()) if self.marks.is_dir() else []

    def keep(self) -> None:
        """Clear the marks: the user keeps these weights (``--keep-weights``)."""
        for name in self.marked():
            (self.marks / quote(name, safe="")).unlink(missing_ok=True)

    def evict_if_last(self) -> list[str]:
        """Evict the marked files when no other lease holds the snapshot; the files evicted."""
        if self.fd is None or not self.marked():
            return []
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return []  # another holder: it evicts when it releases
        snapshot, gone = self.storage / "snapshots" / self.commit, self.marked()
        for name in gone:
            evict(self.storage, snapshot / name)
            (self.marks / quote(name, safe="")).unlink(missing_ok=True)
        return gone

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # drops the lock
            self.fd = None

    def __del__(self) -> None:
        self.close()


def evict(storage: Path, link: Path) -> None:
    """Remove one snapshot file and, when no other snapshot links to it, its blob.

    Taken under the same per-blob lock that ``hf_hub_download`` holds while it
    links a snapshot to an existing blob, so a concurrent worker either sees
    the blob gone (and downloads it) or has linked it first (and keeps it).
    """
    from huggingface_hub.utils import WeakFileLock

    blob = link.resolve() if link.is_symlink() else None
    if blob is None or blob.parent != (storage / "blobs").resolve():
        link.unlink(missing_ok=True)
        return
    lock = Path(str(storage.parent / ".locks" / storage.name / f"{blob.name}.lock"))
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(str(lock)):
        link.unlink(missing_ok=True)
        others = (p for p in (storage / "snapshots").rglob("*") if p.is_symlink() and p.resolve() == blob)
        if next(others, None) is None:
            blob.unlink(missing_ok=True)
