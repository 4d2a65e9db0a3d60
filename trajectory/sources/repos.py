"""One Hub repo per checkpoint as a source: ``[schedule] rule = "repos"`` (MultiBERTs, TinyLlama).

``[model] repo`` names the author (``google``); each revision is the name of one of its model repos
(``multiberts-seed_0-step_20k``), whose ``main`` is measured.  The repos are listed once (``list_models`` with
``author`` and, as a narrowing hint, the pattern's literal prefix as ``search``); offline, from the HF cache's
``models--AUTHOR--NAME`` folders.  Each repo is pinned, fetched and released by its own
:class:`~trajectory.sources.hub.HubSource`, so pinning, caching, offline runs, retries and eviction are the
Hub source's own.  A unit's provenance records ``model = AUTHOR`` and ``revision = NAME``: the repo is
``AUTHOR/NAME``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import HubUnreachableError, TrajectoryError
from ..names import repo_id
from . import Fetched
from .hub import HubSource, RetryPolicy, with_retries


def literal_prefix(pattern: str) -> str:
    """The characters a regular expression's every match starts with (up to its first special character)."""
    prefix = re.match(r"[\w\-]*", pattern)
    return prefix.group(0) if prefix else ""


@dataclass
class RepoSetSource:
    """An author's model repos, one checkpoint each (see the module docstring)."""

    author: str
    offline: bool | None = None
    keep_weights: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    arm: str = "hub"
    repos: dict[str, HubSource] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from huggingface_hub import constants

        if "/" in self.author:
            raise TrajectoryError(f"rule = 'repos': [model] repo must be the author alone, got {self.author!r}")
        repo_id(self.author, "Hub author")
        self.offline = constants.HF_HUB_OFFLINE if self.offline is None else self.offline

    @property
    def model(self) -> str:
        return self.author

    def _repo(self, name: str) -> HubSource:
        if name not in self.repos:
            self.repos[name] = HubSource(
                f"{self.author}/{name}", offline=self.offline, keep_weights=self.keep_weights, retry=self.retry
            )
        return self.repos[name]

    def listing(self, rule) -> list[tuple[str, str]]:
        """(name, name) of the author's model repos; the rule's pattern then selects among them."""
        if rule.rule != "repos":
            raise TrajectoryError(f"rule = {rule.rule!r} reads one repo; [model] repo must be ORG/NAME")
        return [(n, n) for n in self.revision_names(lambda name: rule.parse(name) is not None, rule.pattern)]

    def revision_names(self, keep: Callable[[str], bool], pattern: str = "") -> list[str]:
        if self.offline:
            names = self._cached_names()
        else:
            names = self._hub_names(literal_prefix(pattern))
        return sorted(n for n in names if keep(n))

    def _hub_names(self, search: str) -> list[str]:
        from huggingface_hub import HfApi, constants

        endpoint = constants.ENDPOINT.rstrip("/")
        api = HfApi(endpoint=endpoint)
        try:
            models = with_retries(lambda: list(api.list_models(author=self.author, search=search or None)), self.retry)
        except Exception as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise TrajectoryError(f"cannot list the repos of {self.author} on {endpoint}: {first}") from None
        return [m.id.split("/", 1)[1] for m in models if m.id.startswith(f"{self.author}/")]

    def _cached_names(self) -> list[str]:
        from huggingface_hub import constants

        head = f"models--{self.author}--"
        root = Path(constants.HF_HUB_CACHE)
        return [p.name[len(head) :] for p in root.glob(f"{head}*") if (p / "refs").is_dir()] if root.is_dir() else []

    def pin(self, revisions: Sequence[str]) -> dict[str, str | None]:
        """Each repo's ``main`` commit (``None``: no such repo, or offline and not cached)."""
        pins = {}
        for name in revisions:
            try:
                pins[name] = self._repo(name).pin(["main"])["main"]
            except HubUnreachableError:
                raise
            except TrajectoryError:  # no such repo, or not in the cache offline: a schedule gap
                pins[name] = None
        return pins

    def tokenizer_path(self) -> str:
        pinned = [s for s in self.repos.values() if s.refs]
        if not pinned:
            raise TrajectoryError("pin revisions before asking for the tokenizer")
        return pinned[0].tokenizer_path()

    def config_dir(self, revision: str, commit: str) -> Path:
        return self._repo(revision).config_dir("main", commit)

    def fetch(self, revision: str, commit: str) -> Fetched:
        return replace(self._repo(revision).fetch("main", commit), revision=revision)

    def release(self, fetched: Fetched) -> None:
        self._repo(fetched.revision).release(replace(fetched, revision="main"))

    def weights_on_disk(self) -> int:
        return sum(s.weights_on_disk() for s in self.repos.values() if s.storage.is_dir())
