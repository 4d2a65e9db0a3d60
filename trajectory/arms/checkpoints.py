"""The ``hub`` and ``local`` arms: a model's saved checkpoints, one unit per scheduled revision.

:meth:`CheckpointArm.plan` first resolves a schedule discovered among the repo's branches
(``[schedule] rule = "branches"``), then pins every scheduled revision to a commit once (a Hub SHA, or a local
folder's content hash), tokenizes the evaluation text once and checks the token budget before any
weights move.  A revision that does not exist is a unit that is not ready (a schedule gap).
:meth:`~CheckpointArm.run` fetches one revision (the next ``prefetch`` download in a background thread
meanwhile), measures it with :func:`measure_checkpoint` — exactly what ``trajectory measure`` does — and
releases its weights.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import replace

from ..config import Arm, Manifest, MetricConfig, Provenance, Schedule
from ..data.tokens import EvalTokens, eval_tokens
from ..engine.adapters import adapter_for
from ..engine.measure import check_budget, check_positions, check_vocab, measure_blocks, needs_head, split_by_document
from ..engine.models import weights_hash
from ..errors import TrajectoryError
from ..sources import Fetched
from ..sources.loading import load_config, load_model, load_tokenizer
from ..sources.resolve import make_source
from ..store import Store
from .base import BaseArm, Unit, metric_fields, unit_rows


def measure_checkpoint(
    path: str, tokens: EvalTokens, cfg: MetricConfig, device: str = "cpu", revision: str | None = None
) -> tuple[list[dict], str]:
    """(per-block rows, weights hash) of the checkpoint at ``path`` (and ``revision``): what every
    checkpoint measurement runs, the CLI's ``measure`` and the sweep's hub and local arms alike."""
    head = needs_head(cfg, load_config(path, revision).model_type)
    model, _ = load_model(path, revision, device=device, with_head=head)
    return measure_blocks(model, tokens, cfg, device=device), weights_hash(model)


def wait(future: Future, poll: float = 0.2):
    """``future.result()``, waking every ``poll`` seconds so that Ctrl-C is handled at once: a wait
    without a timeout was seen to sleep through SIGINT until the download it waited on ended (CPython
    3.11, Linux; ``tests/test_sweep.py``'s Ctrl-C test took 22 s before this, under 5 s after)."""
    while True:
        try:
            return future.result(timeout=poll)
        except TimeoutError:
            continue


class Prefetcher:
    """Downloads in one daemon thread, in the order submitted; each :meth:`submit` returns a ``Future``.

    Not a ``ThreadPoolExecutor``: the interpreter joins those threads at exit, so Ctrl-C would wait for
    the download in progress.  A daemon thread is abandoned at exit (its partial file stays an
    ``.incomplete`` blob that ``huggingface_hub`` resumes), and :meth:`close` cancels what is queued.
    """

    def __init__(self, fetch) -> None:
        self._fetch, self._queue = fetch, queue.SimpleQueue()
        threading.Thread(target=self._loop, name="prefetch", daemon=True).start()

    def submit(self, *args) -> Future:
        future: Future = Future()
        self._queue.put((future, args))
        return future

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            future, args = item
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while queued
            try:
                future.set_result(self._fetch(*args))
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)

    def close(self) -> None:
        self._queue.put(None)


class CheckpointArm(BaseArm):
    """Hub or local checkpoints of ``manifest.repo`` at the manifest's schedule."""

    def __init__(self, manifest: Manifest, arm: str, options) -> None:
        self.manifest, self.arm, self.device = manifest, str(arm), options.device
        self.source = make_source(manifest, arm, keep_weights=options.keep_weights, retry=options.retry)
        self.prefetch = manifest.prefetch if options.prefetch is None else options.prefetch
        self.tokens: EvalTokens | None = None
        self._order: list[Unit] = []
        self._futures: dict[str, Future] = {}
        self._pool: Prefetcher | None = None

    @property
    def where(self) -> str:
        """Where a missing revision was looked for, for the gap's reason."""
        if self.arm == Arm.LOCAL or not hasattr(self.source, "offline"):
            return f"in {self.source.model}"
        return "in the local cache (HF_HUB_OFFLINE=1)" if self.source.offline else "on the Hub"

    def plan(self) -> list[Unit]:
        self.manifest = replace(self.manifest, schedule=self._schedule())
        revisions = self.manifest.schedule.revisions()
        pins = self.source.pin(revisions)
        if not any(pins.values()):
            raise TrajectoryError(f"none of the {len(pins)} scheduled revisions exist {self.where}")
        first = next(r for r in revisions if pins[r])
        self.tokens = self._tokens(first, pins[first])
        points = self.manifest.schedule.points
        return [
            self._unit(step, rev, pins[rev], self.manifest.metric.at(i, len(points)))
            for i, (step, rev) in enumerate(points)
        ]

    def _schedule(self) -> Schedule:
        """The manifest's schedule.  A branch rule is resolved now, on the source's one listing of its
        revision names (:mod:`trajectory.discovery`), and recorded in the store for figures, report and
        verify (:meth:`~trajectory.store.Store.write_schedule`)."""
        rule = self.manifest.schedule.rule
        if rule is None:
            return self.manifest.schedule
        store = Store(self.manifest.store_dir)
        if rule.rule == "commits" and getattr(self.source, "offline", False):
            recorded = store.read_schedule(self.manifest)  # a branch's history cannot be read from the cache
            if recorded is not None:
                return recorded
        found = rule.select_labelled(self.source.listing(rule), self.source.model)
        schedule = Schedule(tuple((s, n) for s, n, _ in found), tuple(t for *_, t in found), rule)
        store.write_schedule(self.manifest, schedule)
        return schedule

    def _tokens(self, revision: str, commit: str) -> EvalTokens:
        """The manifest's windows, tokenized once; the budget is checked before any weights move."""
        tokens = eval_tokens(
            self.manifest.data, load_tokenizer(self.manifest.tokenizer or self.source.tokenizer_path())
        )
        config = load_config(str(self.source.config_dir(revision, commit)))
        adapter_for(config.model_type)
        check_positions(config, self.manifest.data.seq_len, self.manifest.data.allow_long)
        check_vocab(tokens, config.vocab_size)
        check_budget(tokens, split_by_document(tokens, self.manifest.metric), config.hidden_size)
        return tokens

    def _unit(self, step: int, revision: str, commit: str | None, metric: MetricConfig) -> Unit:
        prov = Provenance(
            experiment=self.manifest.name,
            arm=self.arm,
            model=self.source.model,
            revision=revision,
            step=step,
            commit=commit,
            data_hash=self.tokens.data_hash,
            **metric_fields(metric),
            pythia_step=step,
            tokens_seen=self.manifest.schedule.tokens_at(revision),
        )
        missing = "" if commit else f"revision not found {self.where}"
        return Unit(prov, group=revision, ready=commit is not None, reason=missing, metric=metric)

    # -- running ---------------------------------------------------------------------------------------------
    def start(self, pending: list[Unit]) -> None:
        self._order = list(pending)
        if self.prefetch > 0 and len(pending) > 1:
            self._pool = Prefetcher(self.source.fetch)

    def _fetch_ahead(self, unit: Unit) -> None:
        """Submit the downloads of ``unit`` and the next ``prefetch`` units after it."""
        if self._pool is None or unit not in self._order:
            return
        i = self._order.index(unit)
        for nxt in self._order[i : i + self.prefetch + 1]:
            if nxt.key not in self._futures:
                p = nxt.provenance
                self._futures[nxt.key] = self._pool.submit(p.revision, p.commit)

    def _fetched(self, unit: Unit) -> Fetched:
        p = unit.provenance
        future = self._futures.pop(unit.key, None)
        try:
            got = wait(future) if future is not None else self.source.fetch(p.revision, p.commit)
        except BaseException:  # Ctrl-C while waiting: close() releases the download when it ends
            if future is not None:
                self._futures[unit.key] = future
            raise
        if any(f.is_symlink() and not f.exists() for f in got.path.iterdir()):
            # a blob shared with the previous revision was evicted while this one was prefetched: fetch again
            stale, got = got, self.source.fetch(p.revision, p.commit)
            self.source.release(stale)  # after the new lease is taken, so it evicts nothing still in use
        return got

    def run(self, unit: Unit) -> list[dict]:
        self._fetch_ahead(unit)
        got = self._fetched(unit)
        try:
            start = time.perf_counter()
            metric = unit.metric or self.manifest.metric
            blocks, wh = measure_checkpoint(str(got.path), self.tokens, metric, self.device)
            seconds = time.perf_counter() - start
        finally:
            self.source.release(got)
        return unit_rows(unit.provenance, blocks, weights_hash=wh, seconds_fetch=got.seconds, seconds_measure=seconds)

    def close(self) -> None:
        """Cancel queued downloads, never wait for the one in progress; release what was fetched ahead
        but never measured (the download in progress, when it ends)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        for future in self._futures.values():
            future.cancel()  # only a queued one can be; the running one releases itself when done
            future.add_done_callback(self._release_unused)
        self._futures.clear()

    def _release_unused(self, future: Future) -> None:
        if not future.cancelled() and future.exception() is None:
            self.source.release(future.result())

    def __getstate__(self) -> dict:
        """Sent to worker processes without its thread pool."""
        return {**self.__dict__, "_pool": None, "_futures": {}}
