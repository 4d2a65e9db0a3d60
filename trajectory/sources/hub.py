"""The Hugging Face Hub as a checkpoint source (:class:`~trajectory.sources.hub.HubSource`), with retries and eviction.

The branches are listed once (``list_repo_refs``) and each revision is pinned to its commit SHA, written
to the HF cache's ``refs/`` as ``hf_hub_download`` itself does, so that a later offline run
(``HF_HUB_OFFLINE=1``) pins from the cache.  The same listing gives the names a ``[schedule] rule =
"branches"`` discovers its revisions among (:meth:`HubSource.revision_names`).  Only ``config.json`` and
the weights are downloaded (safetensors when the revision has them, else ``pytorch_model.bin``, which
transformers loads with ``torch.load(weights_only=True)``), by commit SHA, so a moved branch can never mix
files of two commits.  ``release`` evicts the revision's weight blobs from the cache: a sweep holds at most
(prefetch + 1) revisions on disk instead of ~58 GB for Pythia-160m's 154.  Only what a sweep downloaded is
evicted, never offline or with ``keep_weights``, and never while another process uses it (:mod:`.cache`).

Transient failures (HTTP 429/5xx, reset or truncated connections) are retried with exponential backoff on
top of the client's own retries; a missing revision or file fails at once.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ..atomic import atomic_bytes
from ..errors import HubUnreachableError, TrajectoryError, exception_chain
from ..names import commit_id, inside, relative_name, repo_id
from . import CONFIG, TOKENIZER_FILES, Fetched
from .cache import Lease
from .loading import HUB_UNREACHABLE

#: The result type of the call that :func:`with_retries` retries.
T = TypeVar("T")
#: Weight layouts in order of preference: (index file or None, single file).
WEIGHT_LAYOUTS = (
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
)
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries per request, waiting ``wait`` · 2^k seconds (at most ``max_wait``) between them."""

    attempts: int = 4
    wait: float = 2.0
    max_wait: float = 30.0


def is_transient(exc: BaseException, connect: bool = True) -> bool:
    """A failure worth retrying: HTTP 408/429/5xx, a dropped or short connection, a size mismatch.

    Not ``LocalEntryNotFoundError``: the client raises it after its own retries of the metadata request.
    """
    from huggingface_hub import errors as hf_errors

    if isinstance(exc, hf_errors.LocalEntryNotFoundError):
        return False
    for e in exception_chain(exc):
        if isinstance(
            e,
            hf_errors.RevisionNotFoundError
            | hf_errors.RepositoryNotFoundError
            | hf_errors.RemoteEntryNotFoundError
            | hf_errors.OfflineModeIsEnabled,
        ):
            return False
        response = getattr(e, "response", None)
        if isinstance(e, hf_errors.HfHubHTTPError) and response is not None:
            return response.status_code in (408, 429) or response.status_code >= 500
        if type(e).__name__ in ("ConnectError", "ConnectTimeout") and not connect:
            return False
        if type(e).__module__.startswith("httpx") or "Consistency check failed" in str(e):
            return True
    return False


def with_retries(fn: Callable[[], T], policy: RetryPolicy, sleep=time.sleep, connect: bool = True) -> T:
    """``fn()``, retried on transient failures per ``policy``; the last failure is raised.

    ``connect=False``: a refused or timed-out connection is not retried (the first contact fails fast).
    """
    for attempt in range(policy.attempts):
        try:
            return fn()
        except Exception as exc:  # classified below; anything permanent is raised at once
            if attempt + 1 >= policy.attempts or not is_transient(exc, connect):
                raise
            sleep(min(policy.max_wait, policy.wait * 2**attempt))
    raise AssertionError("unreachable")


def _explain(exc: BaseException, repo: str, revision: str) -> TrajectoryError:
    from .loading import explain_load_error

    return explain_load_error(exc, repo, revision)


@dataclass
class HubSource:
    """A Hub model repo.  ``endpoint``, ``cache_dir`` and ``offline`` are read once from huggingface_hub."""

    repo: str
    endpoint: str | None = None
    cache_dir: str | None = None
    offline: bool | None = None
    keep_weights: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 10.0
    refs: dict[str, str] = field(default_factory=dict)
    arm: str = "hub"

    def __post_init__(self) -> None:
        from huggingface_hub import constants

        repo_id(self.repo, "Hub repo")
        self.endpoint = (self.endpoint or constants.ENDPOINT).rstrip("/")
        self.cache_dir = str(self.cache_dir or constants.HF_HUB_CACHE)
        self.offline = constants.HF_HUB_OFFLINE if self.offline is None else self.offline

    @property
    def model(self) -> str:
        return self.repo

    @property
    def storage(self) -> Path:
        from huggingface_hub.file_download import repo_folder_name

        return Path(self.cache_dir) / repo_folder_name(repo_id=self.repo, repo_type="model")

    def _api(self):
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint)

    # -- pinning -----------------------------------------------------------------------------------------
    def pin(self, revisions: Sequence[str]) -> dict[str, str | None]:
        """Each revision's commit SHA (``None``: not on the Hub, or offline and not in the cache)."""
        for rev in revisions:
            relative_name(rev, f"revision of {self.repo}")
        self._list_refs()
        pins = {rev: self.refs.get(rev) or self._commit_pin(rev) for rev in revisions}
        if not self.offline:  # a commit id pins itself and needs no ref (hf_hub_download writes none for it)
            self._write_refs({r: c for r, c in pins.items() if c and c != r} | self._tokenizer_ref())
        return pins

    @staticmethod
    def _commit_pin(revision: str) -> str | None:
        """A revision that is a commit id (``rule = "commits"``) pins to itself: it names one commit for good,
        online as the branch's history listed it, offline as the store recorded it (fetching it offline then
        needs its snapshot in the cache, and says so when it is not there)."""
        return revision if re.fullmatch(r"[0-9a-f]{40}", revision) else None

    def listing(self, rule) -> list[tuple[str, str]]:
        """(label, revision) pairs a discovery rule selects from (:mod:`trajectory.discovery`): branch and tag
        names, or with ``rule = "commits"`` the titles and ids of the commits on ``rule.branch``."""
        if rule.rule == "repos":
            raise TrajectoryError("rule = 'repos' lists an author's repos: [model] repo must name the author")
        if rule.rule == "branches":
            return [(n, n) for n in self.revision_names(lambda name: rule.parse(name) is not None)]
        if self.offline:
            raise TrajectoryError(
                f"the commits of {self.repo}@{rule.branch} cannot be listed with HF_HUB_OFFLINE=1 and no schedule "
                "was recorded in the store; run once with network"
            )
        api = self._api()
        try:
            commits = with_retries(lambda: api.list_repo_commits(self.repo, revision=rule.branch), self.retry)
        except Exception as exc:
            raise _explain(exc, self.repo, rule.branch) from None
        return [(c.title, commit_id(c.commit_id, f"{self.endpoint} (commit of {self.repo})")) for c in commits]

    def revision_names(self, keep: Callable[[str], bool]) -> list[str]:
        """The repo's branch (and tag) names that ``keep`` accepts, from the same one listing that pins.

        Online, every kept name is recorded in the cache's ``refs/`` too, so that an offline run
        (which lists the cached refs) finds the same names and thins them the same way.
        """
        self._list_refs()
        kept = sorted(name for name in self.refs if keep(name))
        if not self.offline:
            self._write_refs({name: self.refs[name] for name in kept})
        return kept

    def _list_refs(self) -> None:
        """List the branches and tags once: from the Hub, or offline from the cache's ``refs/``."""
        if not self.refs:
            refs = self._cached_refs() if self.offline else self._hub_refs()
            origin = self.cache_dir if self.offline else self.endpoint
            self.refs = {n: commit_id(c, f"{origin} (ref {n!r} of {self.repo})") for n, c in refs.items()}
        if self.offline and not self.refs:
            raise TrajectoryError(
                f"{self.repo} has no pinned revisions in the cache {self.cache_dir} and "
                "HF_HUB_OFFLINE=1; run once with network, or unset HF_HUB_OFFLINE"
            )

    def _hub_refs(self) -> dict[str, str]:
        from huggingface_hub import errors as hf_errors

        api = self._api()
        try:  # first contact: a short timeout, so an unreachable Hub fails in seconds, not minutes
            with_retries(lambda: api.model_info(self.repo, timeout=self.timeout), self.retry, connect=False)
            refs = with_retries(lambda: api.list_repo_refs(self.repo), self.retry)
        except hf_errors.RepositoryNotFoundError:
            raise TrajectoryError(f"no model repo named {self.repo!r} on {self.endpoint}") from None
        except Exception as exc:
            if any(type(e).__name__ in {"ConnectError", "ConnectTimeout", "ReadTimeout"} for e in exception_chain(exc)):
                raise HubUnreachableError(f"{self.endpoint}: {HUB_UNREACHABLE}") from None
            raise TrajectoryError(f"cannot list the revisions of {self.repo}: {str(exc).splitlines()[0]}") from None
        return {ref.name: ref.target_commit for ref in [*refs.branches, *refs.tags]}

    def _cached_refs(self) -> dict[str, str]:
        folder = self.storage / "refs"
        if not folder.is_dir():
            return {}
        return {str(p.relative_to(folder)): p.read_text().strip() for p in folder.rglob("*") if p.is_file()}

    def _write_refs(self, pins: dict[str, str]) -> None:
        """Record branch → commit in the cache's ``refs/`` (the layout ``hf_hub_download`` writes)."""
        for rev, commit in pins.items():
            path = inside(self.storage / "refs", rev, f"revision of {self.repo}")
            if path.is_file() and path.read_text() == commit:
                continue
            atomic_bytes(path, commit)

    def _tokenizer_ref(self) -> dict[str, str]:
        return {"main": self.refs["main"]} if "main" in self.refs else {}

    # -- files -------------------------------------------------------------------------------------------
    def _download(self, filename: str, commit: str, revision: str) -> Path:
        from huggingface_hub import hf_hub_download

        def get() -> str:
            return hf_hub_download(
                self.repo,
                filename,
                revision=commit,
                cache_dir=self.cache_dir,
                endpoint=self.endpoint,
                local_files_only=bool(self.offline),
                etag_timeout=self.timeout,
            )

        try:
            return Path(with_retries(get, self.retry))
        except Exception as exc:
            raise _explain(exc, self.repo, revision) from None

    def _listing(self, commit: str, revision: str) -> list[str]:
        if self.offline:
            snap = self.storage / "snapshots" / commit
            return sorted(str(p.relative_to(snap)) for p in snap.rglob("*")) if snap.is_dir() else []
        api = self._api()
        try:
            info = with_retries(lambda: api.model_info(self.repo, revision=commit, timeout=self.timeout), self.retry)
        except Exception as exc:
            raise _explain(exc, self.repo, revision) from None
        return [s.rfilename for s in info.siblings or []]

    def _weight_files(self, names: list[str], commit: str, revision: str) -> list[str]:
        """The weight files to download: safetensors preferred, shards named by their index."""
        for index, single in WEIGHT_LAYOUTS:
            if single in names:
                return [single]
            if index in names:
                weight_map = json.loads(self._download(index, commit, revision).read_text())["weight_map"]
                shards = sorted(set(weight_map.values()))
                for shard in shards:  # names served by the Hub: none may leave the snapshot folder
                    relative_name(shard, f"{self.repo}@{revision} {index} entry")
                return [index, *shards]
        if self.offline:
            raise TrajectoryError(
                f"the weights of {self.repo}@{revision} are not in the local cache (evicted after "
                "measuring?) and HF_HUB_OFFLINE=1; run with network, or sweep with --keep-weights"
            )
        raise TrajectoryError(
            f"{self.repo}@{revision} has no weights on the Hub (looked for model.safetensors and pytorch_model.bin)"
        )

    def tokenizer_path(self) -> str:
        """A folder with the tokenizer files of ``main`` (or of the first pinned revision)."""
        if not self.refs:
            raise TrajectoryError("pin revisions before asking for the tokenizer")
        revision = "main" if "main" in self.refs else sorted(self.refs)[0]
        commit = self.refs[revision]
        names = [n for n in self._listing(commit, revision) if n in TOKENIZER_FILES]
        if not names:
            raise TrajectoryError(
                f"{self.repo}@{revision} has no tokenizer files; name one with [model] tokenizer in the manifest"
            )
        paths = [self._download(name, commit, revision) for name in names]
        return str(paths[0].parent)

    def config_dir(self, revision: str, commit: str) -> Path:
        """The snapshot folder of ``commit`` with its ``config.json`` (no weights)."""
        return self._download(CONFIG, commit, revision).parent

    def fetch(self, revision: str, commit: str) -> Fetched:
        """Download ``config.json`` and the weights of ``commit`` (nothing when already cached).

        The snapshot is leased until :meth:`release`; a weight file this call downloaded is marked as a
        sweep's (it may be evicted), one that was already there is the user's (:mod:`.cache`).
        """
        start = time.perf_counter()
        lease = Lease(self.storage, commit)
        try:
            names = self._listing(commit, revision)
            if not names:
                raise TrajectoryError(
                    f"{self.repo}@{revision} ({commit[:10]}) is not in the local cache and {HUB_UNREACHABLE}"
                )
            path = self._download(CONFIG, commit, revision).parent
            for name in self._weight_files(names, commit, revision):
                had = (self.storage / "snapshots" / commit / name).exists()
                self._download(name, commit, revision)
                if not had and not self.offline and not self.keep_weights:
                    lease.mark(name)
        except BaseException:
            lease.close()
            raise
        return Fetched(revision, commit, path, time.perf_counter() - start, lease)

    def release(self, fetched: Fetched) -> None:
        """Evict the weights a sweep downloaded for this revision, when no other process is using them;
        nothing offline; with ``keep_weights``, clear their marks instead (see :mod:`.cache`)."""
        lease = fetched.lease if isinstance(fetched.lease, Lease) else Lease(self.storage, fetched.commit)
        try:
            if self.keep_weights:
                lease.keep()
            elif not self.offline:
                lease.evict_if_last()
        finally:
            lease.close()

    def weights_on_disk(self) -> int:
        """How many snapshots in the cache hold weights (what the disk bound counts)."""
        snaps = self.storage / "snapshots"
        return (
            sum(any(p.name.endswith(WEIGHT_SUFFIXES) and p.exists() for p in s.iterdir()) for s in snaps.iterdir())
            if snaps.is_dir()
            else 0
        )
