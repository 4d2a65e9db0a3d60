"""Checkpoint sources: where a revision's weights come from, behind one interface.

A source lists the revision names it has (``revision_names``, for a schedule discovered among them),
pins (``pin``) each scheduled revision to a commit id once (``None``: the revision does not exist, a
schedule gap), gives a folder with the tokenizer, fetches (``fetch``) one pinned revision into a folder that
``from_pretrained`` loads, and releases (``release``) it when measured.

- :class:`~trajectory.sources.hub.HubSource`: a Hugging Face Hub model repo through ``huggingface_hub``;
- :class:`~trajectory.sources.local.LocalDirSource`: a folder with one checkpoint sub-folder per revision
  (a user's own run); the "commit" is the sha256 of the files;
- :class:`~trajectory.sources.repos.RepoSetSource`: one Hub repo per checkpoint (MultiBERTs, TinyLlama), the
  revision being the repo's name under one author.

:mod:`.loading` opens models, configs and tokenizers safely; :mod:`.resolve` finds a manifest's
architecture and tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

CONFIG = "config.json"
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
    "tokenizer.model",
)  # fmt: skip


@dataclass(frozen=True)
class Fetched:
    """A revision on local disk, ready for ``from_pretrained``; ``lease`` keeps it there until released."""

    revision: str
    commit: str
    path: Path
    seconds: float
    lease: object | None = field(default=None, compare=False, repr=False)


class CheckpointSource(Protocol):
    """Where an arm's revisions come from: pinned once, fetched one at a time, released when measured."""

    arm: str
    model: str

    def pin(self, revisions: Sequence[str]) -> dict[str, str | None]: ...
    def revision_names(self, keep: Callable[[str], bool]) -> list[str]: ...
    def listing(self, rule) -> list[tuple[str, str]]: ...
    def tokenizer_path(self) -> str: ...
    def config_dir(self, revision: str, commit: str) -> Path: ...
    def fetch(self, revision: str, commit: str) -> Fetched: ...
    def release(self, fetched: Fetched) -> None: ...
