"""A folder of checkpoints as a source: ``root/<revision>/`` sub-folders, one per revision (a user's own
run, or a twin's saved checkpoints).  A revision's "commit" is the sha256 of its files, so an edited
checkpoint is a new unit and never a stale number.

A revision folder may be a symlink, wherever it leads (``step0 -> /scratch/run/step0``, a common layout):
nothing is ever written there, so reading through the user's own link is safe.  A revision *name* that
leaves the folder (``../x``, ``/x``) is refused, by ``measure`` and the sweep alike (:func:`revision_dir`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import TrajectoryError
from ..names import relative_name
from . import CONFIG, TOKENIZER_FILES, Fetched


def content_hash(folder: Path) -> str:
    """sha256 over a checkpoint folder's files (names and bytes), 40 hex digits, like a commit id."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:40]


def revision_dir(root: Path, revision: str) -> Path:
    """``root/revision`` for a plain relative name (no ``..``, no root); a symlink there is followed."""
    return Path(root) / relative_name(revision, f"revision of {root}")


@dataclass
class LocalDirSource:
    """``root/<revision>/`` checkpoint folders; the tokenizer from ``root`` or the first revision."""

    root: Path
    arm: str = "local"

    @property
    def model(self) -> str:
        return str(Path(self.root).resolve())

    def pin(self, revisions: Sequence[str]) -> dict[str, str | None]:
        if not Path(self.root).is_dir():
            raise TrajectoryError(f"checkpoint folder not found: {self.root}")
        folders = {rev: revision_dir(self.root, rev) for rev in revisions}
        return {rev: content_hash(path) if (path / CONFIG).is_file() else None for rev, path in folders.items()}

    def revision_names(self, keep: Callable[[str], bool]) -> list[str]:
        """The names of the checkpoint sub-folders (those with a ``config.json``) that ``keep`` accepts."""
        if not Path(self.root).is_dir():
            raise TrajectoryError(f"checkpoint folder not found: {self.root}")
        return sorted(p.name for p in Path(self.root).iterdir() if (p / CONFIG).is_file() and keep(p.name))

    def listing(self, rule) -> list[tuple[str, str]]:
        """(name, name) of the sub-folders a ``rule = "branches"`` pattern selects from (the only listing a
        folder has)."""
        if rule.rule != "branches":
            raise TrajectoryError(f"rule = {rule.rule!r} needs Hub repos; a folder of checkpoints has sub-folders only")
        return [(n, n) for n in self.revision_names(lambda name: rule.parse(name) is not None)]

    def tokenizer_path(self) -> str:
        for folder in [Path(self.root), *sorted(p for p in Path(self.root).iterdir() if p.is_dir())]:
            if any((folder / name).is_file() for name in TOKENIZER_FILES):
                return str(folder)
        raise TrajectoryError(
            f"no tokenizer files in {self.root} or its checkpoint folders; name one with "
            "[model] tokenizer in the manifest"
        )

    def config_dir(self, revision: str, commit: str) -> Path:
        return Path(self.root) / revision

    def fetch(self, revision: str, commit: str) -> Fetched:
        return Fetched(revision, commit, Path(self.root) / revision, 0.0)

    def release(self, fetched: Fetched) -> None:
        pass
