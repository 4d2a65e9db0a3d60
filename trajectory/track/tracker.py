"""A training run measured in its own loop: :class:`~trajectory.track.tracker.Tracker` writes a sweep's store.

``tracker.step(model, step)`` is called after every optimiser update (and once before the first, at step 0).
At the steps of its schedule (:func:`~trajectory.schedule.run_schedule`: ``pythia``, ``dense``, every ``k``
updates, or a list) it measures every block of the model in memory on fixed evaluation windows, chosen once
and content-hashed, and stores one unit: arm ``run``, revision ``step<t>``, with the run's provenance.

**Provenance.**  ``commit`` is ``run:<digest>``, the digest of the architecture
(:func:`~trajectory.engine.models.config_hash`) and of
``run`` (a label of the training recipe; the Trainer callback hashes the TrainingArguments that decide the
weights), so a restarted or resumed run finds its measured steps stored and skips them, and another recipe
under the same experiment name is another run.  ``seed`` is the run's seed, ``weights_hash`` the weights'
hash at the step, ``tokens_seen`` what the caller says.

**The band from the first call.**  On its first call the tracker draws ``random_init`` untrained models of the
same config (the family's real init, :func:`~trajectory.engine.models.fresh_model`; seeds 0 … N−1, without
touching the global RNG) and stores them as the ``random-init`` arm's units, exactly as a sweep would.  The
run's step 0 is then held to that band (:func:`~trajectory.verdicts.band.init_check`): a run that did not
start from this init is named in a :class:`~trajectory.errors.TrajectoryWarning`.

**Cost.**  Training time is the wall time between calls, measuring excluded.  Each measured unit stores its
training time since the previous measurement (``seconds_fetch``, as the twin does), its own
``seconds_measure``, ``measure_fraction = seconds_measure / seconds_fetch`` and ``measure_fraction_total``
(all measuring so far, the band included, ÷ all training so far); :meth:`Tracker.summary` gives the totals.

Only the main process measures and writes (``torch.distributed`` rank 0, or ``is_main``).  A measurement
that fails is recorded in the store's ``failed/`` and reported; training goes on.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl
import torch

from .. import names
from ..arms.base import metric_fields, unit_rows
from ..arms.random_init import draw_and_measure, random_init_provenance
from ..config import DEFAULT_BAND_COVERAGE, DEFAULT_SEQ_LEN, Arm, DataSpec, MetricConfig, Provenance
from ..data.tokens import EvalTokens, eval_tokens, from_ids
from ..engine.adapters import adapter_for
from ..engine.measure import check_budget, check_positions, check_vocab, measure_blocks, split_by_document
from ..engine.models import config_hash, init_name, weights_hash
from ..errors import ConfigError, TrajectoryWarning
from ..schedule import RunSchedule, run_schedule
from ..store import Store
from ..verdicts.band import init_check
from .undisturbed import undisturbed

ARM = str(Arm.RUN)


@dataclass(frozen=True)
class TrackSpec:
    """What a tracked run measures and how it is named.

    ``experiment`` names it in the store (and ``figures/<experiment>/``); ``model`` fills the ``model`` column
    (default: the experiment); ``seed`` is the run's own seed; ``run`` labels its training recipe (hashed into
    its commit); ``random_init`` draws form the band, initialised by ``init`` (None: the family's real init);
    ``metric`` is how R²_lin and its companions are computed; ``coverage`` the band's.
    """

    experiment: str = "run"
    model: str | None = None
    seed: int = 0
    run: str = ""
    random_init: int = 20
    init: str | None = None
    metric: MetricConfig = field(default_factory=MetricConfig)
    coverage: float = DEFAULT_BAND_COVERAGE

    def __post_init__(self) -> None:
        if not (isinstance(self.experiment, str) and self.experiment) or "/" in self.experiment:
            raise ConfigError(f"experiment must be a plain name (no '/'), got {self.experiment!r}")
        names.relative_name(self.experiment, "experiment name")
        if self.experiment.startswith("."):
            raise ConfigError(f"experiment must not start with '.', got {self.experiment!r}")
        if not (isinstance(self.random_init, int) and self.random_init >= 0):
            raise ConfigError(f"random_init must be an integer ≥ 0 (untrained draws), got {self.random_init!r}")


@dataclass(frozen=True)
class Measured:
    """One measurement: the step, its per-block rows, and what it cost."""

    step: int
    blocks: list[dict]
    seconds_measure: float
    seconds_train: float
    fraction: float | None
    fraction_total: float | None

    def logs(self) -> dict[str, float]:
        """Flat scalars for a logger: ``r2_lin/block_<l>`` (and each companion's ``<key>/block_<l>``), the cost."""
        out = {}
        for row in self.blocks:
            for key, value in row.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and key in LOGGED:
                    out[f"{key}/block_{row['block']}"] = float(value)
        out["cost/measure_seconds"] = self.seconds_measure
        for name, value in (("measure_fraction", self.fraction), ("measure_fraction_total", self.fraction_total)):
            if value is not None:
                out[f"cost/{name}"] = value
        return out


#: The per-block numbers :meth:`Measured.logs` passes to a logger (those a measurement has).
LOGGED = (
    "r2_lin", "r2_lin_inf", "linearity_score", "linearity_score_heldout", "effective_rank", "r2_lin_cv",
    "swap_dloss",
)  # fmt: skip


def eval_windows(source, tokenizer=None, seq_len: int = DEFAULT_SEQ_LEN) -> EvalTokens:
    """Evaluation windows from :class:`~trajectory.data.tokens.EvalTokens` (as they are), token ids (1-D, cut
    into ``seq_len`` windows,
    or (n_seq, seq_len)), a :class:`~trajectory.config.DataSpec`, or a text file's path (the last two are
    tokenized with ``tokenizer``, with the DataSpec's or the default window budget)."""
    if isinstance(source, EvalTokens):
        return source
    if isinstance(source, str | Path):
        source = DataSpec("text", str(source), seq_len=seq_len)
    if isinstance(source, DataSpec):
        if tokenizer is None:
            raise ConfigError("evaluation text needs a tokenizer: give the run's tokenizer, or token ids")
        return eval_tokens(source, tokenizer)
    if isinstance(source, torch.Tensor):
        source = source.detach().cpu().numpy()
    return from_ids(source, seq_len)


def main_process() -> bool:
    """Rank 0 of ``torch.distributed`` (or no process group at all)."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class Tracker:
    """Measure a training run at its scheduled steps into ``store`` (module docstring).

    >>> tracker = Tracker("store/mine", eval_ids, "dense", total_steps=1000, experiment="mine")  # doctest: +SKIP
    >>> for t in range(1001):                                                                    # doctest: +SKIP
    ...     tracker.step(model, t)          # before update t+1: the weights after t updates
    ...     if t < 1000: train_one_update(model)
    """

    def __init__(
        self,
        store: str | Path | Store,
        eval_windows: EvalTokens,
        schedule="dense",
        *,
        total_steps: int | None = None,
        random_init: int = 20,
        companions=(),
        spec: TrackSpec | None = None,
        log=None,
        is_main: bool | None = None,
        **names,
    ) -> None:
        self.store = store if isinstance(store, Store) else Store(store)
        self.windows = eval_windows
        self.schedule: RunSchedule = run_schedule(schedule, total_steps)
        base = spec or TrackSpec(**names)
        metric = replace(base.metric, companions=companions) if companions else base.metric
        self.spec = replace(base, random_init=random_init, metric=metric) if spec is None else base
        self.log = log  # called with Measured.logs() after each measurement (a Trainer's log, wandb.log, …)
        self.is_main = main_process() if is_main is None else is_main
        self.commit: str | None = None
        self.measured: list[Measured] = []
        self.skipped: list[int] = []
        self.seconds = {"train": 0.0, "measure": 0.0, "band": 0.0}
        self._clock: float | None = None

    # -- the first call ------------------------------------------------------------------------------------
    def start(self, model) -> None:
        """Check the windows against the model, fix the run's commit, draw and store the band; start the clock."""
        if not self.is_main or self.commit is not None:
            return
        config = model.config
        adapter_for(config.model_type)  # an unsupported family fails before training goes on
        init_name(config, self.spec.init)
        check_positions(config, self.windows.ids.shape[1], allow_long=True)
        check_vocab(self.windows, model.get_input_embeddings().num_embeddings)
        check_budget(self.windows, split_by_document(self.windows, self.spec.metric), config.hidden_size)
        blob = json.dumps({"config": config_hash(config), "run": self.spec.run}, sort_keys=True)
        self.commit = "run:" + hashlib.sha256(blob.encode()).hexdigest()[:16]
        start = time.perf_counter()
        self._band(config, _device_of(model))
        self.seconds["band"] = time.perf_counter() - start
        self._clock = time.perf_counter()

    def _band(self, config, device: str) -> None:
        s = self.spec
        for seed in range(s.random_init):
            p = random_init_provenance(
                s.experiment, self.model_name, config, seed, self.windows.data_hash, s.metric, s.init
            )
            if not self.store.has(p.key()):
                blocks = draw_and_measure(config, seed, self.windows, s.metric, s.init, device)
                self.store.write_unit(p.key(), unit_rows(p, blocks))

    @property
    def model_name(self) -> str:
        return self.spec.model or self.spec.experiment

    def provenance(self, step: int, tokens_seen: int | None = None) -> Provenance:
        """The unit of the run at ``step`` (after :meth:`start`)."""
        return Provenance(
            experiment=self.spec.experiment,
            arm=ARM,
            model=self.model_name,
            revision=f"step{step}",
            step=step,
            commit=self.commit,
            data_hash=self.windows.data_hash,
            **metric_fields(self.spec.metric),
            seed=self.spec.seed,
            tokens_seen=0 if step == 0 else tokens_seen,
        )

    # -- every call ----------------------------------------------------------------------------------------
    def step(self, model, step: int, tokens_seen: int | None = None) -> Measured | None:
        """Measure ``model`` (its weights after ``step`` updates) if ``step`` is scheduled and not yet stored."""
        if not self.is_main:
            return None
        first = self.commit is None
        self.start(model)
        now = time.perf_counter()
        self.seconds["train"] += 0.0 if first else now - self._clock  # before the first call: setup, not training
        self._clock = now
        if step not in self.schedule or step in self._seen():
            return None
        p = self.provenance(step, tokens_seen)
        if self.store.has(p.key()):
            self.skipped.append(step)
            result = None
        else:
            result = self._measure(model, p)
        if step == 0:
            self._check_start()
        self._clock = time.perf_counter()
        return result

    def _seen(self) -> set[int]:
        return {m.step for m in self.measured} | set(self.skipped)

    def _measure(self, model, p: Provenance) -> Measured | None:
        start = time.perf_counter()
        trained = sum(m.seconds_train for m in self.measured)
        since = self.seconds["train"] - trained
        try:
            with undisturbed(model):
                blocks = measure_blocks(model, self.windows, self.spec.metric, device=_device_of(model))
                wh = weights_hash(model)
        except Exception as exc:  # any failure of a measurement is recorded; the training must go on
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            self.store.record_failure(p.key(), p.row(), reason)
            warnings.warn(f"run step {p.step}: not measured ({reason}); training goes on", TrajectoryWarning, 2)
            return None
        seconds = time.perf_counter() - start
        self.seconds["measure"] += seconds
        m = Measured(p.step, blocks, seconds, since, _ratio(seconds, since), None)
        m = replace(m, fraction_total=_ratio(self.seconds["measure"] + self.seconds["band"], self.seconds["train"]))
        cost = {"measure_fraction": m.fraction, "measure_fraction_total": m.fraction_total}
        rows = unit_rows(p, blocks, weights_hash=wh, seconds_fetch=since, seconds_measure=seconds, **cost)
        self.store.write_unit(p.key(), rows)
        self.measured.append(m)
        if self.log is not None:
            self.log(m.logs())
        return m

    def _check_start(self) -> None:
        """Step 0 of the run against its band (:func:`~trajectory.verdicts.band.init_check`): a warning when it
        lies outside."""
        if self.spec.random_init < 2:
            return
        frame = self.store.read().filter(
            (pl.col("experiment") == self.spec.experiment) & (pl.col("data_hash") == self.windows.data_hash)
        )
        run = frame.filter(pl.col("arm") == ARM)
        frame = frame.filter((pl.col("arm") != ARM) | (pl.col("commit") == self.commit) & (pl.col("step") == 0))
        if run.is_empty():
            return
        _, warning = init_check(frame, ARM, coverage=self.spec.coverage)
        if warning:
            warnings.warn(warning, TrajectoryWarning, stacklevel=3)

    def summary(self) -> dict[str, float | None]:
        """Seconds trained, measured (the scheduled steps) and spent on the band, and measuring ÷ training."""
        total = self.seconds["measure"] + self.seconds["band"]
        return {
            "train_seconds": self.seconds["train"],
            "measure_seconds": self.seconds["measure"],
            "band_seconds": self.seconds["band"],
            "measure_fraction_total": _ratio(total, self.seconds["train"]),
            "measurements": len(self.measured),
            "skipped": len(self.skipped),
        }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _device_of(model) -> str:
    param = next(model.parameters(), None)
    return str(param.device) if param is not None else "cpu"
