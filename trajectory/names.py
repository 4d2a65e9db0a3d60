"""Names that come from outside (a manifest, the Hub) and become paths: what each may be.

A Hub repo id, a revision (branch or tag), a commit id, a file a repo serves
and a store key are all joined onto a folder we own (the HF cache, a checkpoint
folder, the store).  Each is checked here before it touches the disk, so that
no name can climb out of that folder (``../``), start at the root (``/x``) or
smuggle a separator the filesystem reads differently (``\\``, NUL):

- a repo id follows the Hub's own rule (``huggingface_hub.utils.validate_repo_id``:
  ``NAME`` or ``ORG/NAME``, no ``..`` or ``--``);
- a revision or file name is a relative POSIX path whose every part is a plain
  name (``refs/pr/1`` and ``shards/model-1.safetensors`` are fine);
- a commit is 40 lowercase hex digits, as git writes it, and a store key is hex.

Every refusal is one :class:`~trajectory.errors.TrajectoryError` line naming the
value, where it came from, and what a valid one looks like.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from .errors import TrajectoryError

COMMIT = re.compile(r"[0-9a-f]{40}")
KEY = re.compile(r"[0-9a-f]{8,64}")


def repo_id(name: str, origin: str = "repo") -> str:
    """``name`` if it is a valid Hub repo id (``ORG/NAME``), else a one-line error."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise TrajectoryError(
            f"{origin} {name!r} is not a Hub repo id: use ORG/NAME (letters, digits, '-', '_', "
            "'.'; no '..'), or a local directory that exists"
        ) from None
    return name


def relative_name(name: str, origin: str) -> str:
    """``name`` if it is a relative path of plain parts (no ``..``, ``.``, root, backslash or NUL)."""
    parts = PurePosixPath(name).parts if isinstance(name, str) else ()
    bad = (
        not parts
        or name.startswith("/")
        or "\\" in name
        or "\0" in name
        or any(p in (".", "..") for p in parts)
        or name.endswith("/")
        or "//" in name
    )
    if bad:
        raise TrajectoryError(
            f"{origin} {name!r} is not a plain name: it would leave its folder "
            "(use names like step1000 or model-00001.safetensors, without '..' or a leading '/')"
        )
    return name


def commit_id(commit: str, origin: str) -> str:
    """``commit`` if it is 40 lowercase hex digits (a git commit id)."""
    if not (isinstance(commit, str) and COMMIT.fullmatch(commit)):
        raise TrajectoryError(
            f"{origin} gave {commit!r} as a commit id; a commit id is 40 hex digits "
            "(is the endpoint really a Hugging Face Hub?)"
        )
    return commit


def store_key(key: str) -> str:
    """``key`` if it is a hex store key, as :meth:`trajectory.provenance.Provenance.key` makes them."""
    if not (isinstance(key, str) and KEY.fullmatch(key)):
        raise TrajectoryError(f"store key {key!r} is not a hex digest; unit keys are Provenance.key() hashes")
    return key


def inside(root: Path, name: str, origin: str) -> Path:
    """``root / name``, checked to be a plain relative name that stays under ``root`` (symlinks resolved)."""
    path = Path(root) / relative_name(name, origin)
    base = Path(root).resolve()
    if base != path.resolve() and base not in path.resolve().parents:
        raise TrajectoryError(f"{origin} {name!r} resolves outside {root} (a symlink?); refusing to use it")
    return path
