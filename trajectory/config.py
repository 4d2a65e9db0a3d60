"""The typed settings of an experiment, written once: what is measured, on which text, at which steps, by
which arms, and the provenance every stored unit carries.

This module is a leaf: it imports nothing of ``trajectory`` but :mod:`trajectory.errors`, and nothing heavy
(no torch, no polars), so reading a manifest costs milliseconds.  :mod:`trajectory.manifest` fills these
dataclasses from TOML; the Python API and the CLI fill them from arguments.  Every default lives here.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .provenance import (  # noqa: F401  (re-exported)
    ARM_LABELS,
    SWEPT_ARMS,
    TRAINED_ARMS,
    Arm,
    Provenance,
    arm_label,
)
from .schedule import (  # noqa: F401  (re-exported: the schedule is one of the settings)
    Schedule,
    dense_steps,
    natural_key,
    pythia_steps,
    step_of,
    twin_schedule,
)
from .variants import PERTURBATION, PerturbationSpec, Regulariser, is_twin, perturbation_steps, variant_arm  # noqa: F401

#: The package version, stored with every row as ``code_version``.
__version__ = "0.2.0"

# -- defaults, written once ----------------------------------------------------------------------------------
#: Evaluation tokens (train + held-out) per measurement, and the window they are cut into.
DEFAULT_TOKENS = 16_384
DEFAULT_SEQ_LEN = 128
#: Share of windows held out (split by document, never by token: :func:`trajectory.engine.measure.split_by_document`).
DEFAULT_HELDOUT_FRAC = 0.2
#: The most of the evaluation windows one document may give before every document has given its share
#: (:func:`trajectory.data.tokens.windows`): 3% of 128 windows is 3 windows, so at least 43 documents.
DEFAULT_MAX_DOC_SHARE = 0.03
#: The embedded corpus's tokenizer (a BPE trained locally on the CPython standard library).
DEFAULT_TOKENIZER = "embedded:4096"
#: Bumped whenever a change to the maths could change a stored number (it is hashed into the metric digest).
#: 2: mixed-precision products by default, held-out rows scored by their residuals.
#: 3: ``r2_lin_inf``; the k-fold interval uses the exact t quantile and is named ``r2_lin_cv_low/high``.
METRIC_VERSION = 3
#: Companion metrics a metric config may ask for (:mod:`trajectory.engine.companions`, :mod:`.engine.swap`,
#: :mod:`.engine.tokentail`).  ``remove`` and ``lowrank`` are the compression companions
#: (:mod:`trajectory.engine.replaced`).
COMPANIONS = ("linearity_score", "effective_rank", "ci", "swap", "remove", "lowrank", "token_tail")
#: Names of the product precisions (their dtypes: :data:`trajectory.engine.stats.PRECISIONS`).
PRECISION_NAMES = ("mixed", "float64", "float32")
#: Where evaluation text can come from (:mod:`trajectory.data.tokens`).
DATA_KINDS = ("text", "parquet", "dataset", "embedded")
#: How a random-init draw is initialised (``[random_init] init``): ``gpt-neox`` is GPT-NeoX's own small_init /
#: wang_init (:mod:`trajectory.engine.initialisation`); ``hf-default`` the model's own ``from_config`` draw.
INIT_SCHEMES = ("gpt-neox", "hf-default")
#: The random-init band's coverage: a two-sided prediction interval for one new draw (``[random_init] coverage``).
DEFAULT_BAND_COVERAGE = 0.95
#: Largest seed accepted: seeds go into numpy's SeedSequence and torch generators as signed 64-bit integers.
MAX_SEED = 2**63 - 1
#: Longest experiment name: it names folders (``figures/<name>/``, temporary names beside them), under 255 bytes.
MAX_NAME_BYTES = 120
#: Where a sweep runs: ``auto`` is CUDA when torch sees a GPU, else the CPU (resolved once per sweep).
DEVICES = ("auto", "cpu", "cuda")
#: A twin whose training would not finish overnight on a CPU (12 h, extrapolated from a timed update) is
#: skipped unless ``--arms`` names it: a sweep must not start a multi-day CPU run silently.  Generous on
#: purpose: the estimate is rough, and the demo's twin (minutes) must run even on a loaded machine.
TWIN_CPU_LIMIT_S = 12 * 3600.0
#: Tokens in the one update that is timed for that estimate (a short batch: it must itself be quick).
TWIN_PROBE_TOKENS = 256
#: A CPU rate no CPU this runs on is slower than (FLOP/s of training): a twin whose 6 · parameters · tokens
#: fits the limit even at this rate needs no timed probe (the demo's measured ≈ 7e10 FLOP/s on one core here).
CPU_FLOPS_FLOOR = 5e9


def _finite(value: float, name: str, low: float = -math.inf, high: float = math.inf, open_low: bool = False) -> None:
    ok = isinstance(value, int | float) and math.isfinite(value) and low <= value <= high
    if not ok or (open_low and value == low):
        bound = f"in ({low}, {high}]" if open_low else f"in [{low}, {high}]"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")


def _seed(value: Any, name: str) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED):
        raise ConfigError(f"{name} must be an integer in [0, 2⁶³ − 1], got {value!r}")
    return value


# -- what is measured ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricConfig:
    """How R²_lin is computed.

    ``heldout_frac``: share of windows held out; ``seed``: seed of the split permutation; ``split``:
    ``random`` (a seeded permutation of the windows) or ``tail`` (the last windows, the paper's protocol);
    ``rcond``: eigenvalues of the train Gram matrix below ``rcond² · λ_max`` are dropped (the cutoff
    ``numpy.linalg.lstsq(rcond=…)`` applies); ``compute_dtype``: precision of the per-batch products
    (:data:`PRECISION_NAMES`); ``batch_tokens``: tokens per forward pass (does not change results, not
    hashed); ``companions``: extra metrics (:data:`COMPANIONS`, or ``"all"``); ``folds``: k of the k-fold
    interval (``ci``); ``lowrank_tol``: the Δloss (nats) within which ``lowrank`` looks for the smallest
    rank; ``companion_points``: measure the companions at only this many of each trained arm's
    steps, spread evenly over its schedule, the first and last included (0: at every step; R²_lin is
    measured at every step either way; not hashed: a unit's digest says whether it has companions).
    """

    heldout_frac: float = DEFAULT_HELDOUT_FRAC
    """Share of the evaluation windows held out for scoring (split by sequence, never by token)."""
    seed: int = 0
    """Seed of the permutation that splits windows into train and held-out (and deals the k folds)."""
    split: str = "random"
    """``random``: a seeded permutation of the windows; ``tail``: the last windows, the paper's protocol."""
    rcond: float = 1e-6
    """Eigenvalues of the train Gram matrix below ``rcond² · λ_max`` are dropped (``numpy.linalg.lstsq``'s cutoff)."""
    compute_dtype: str = "mixed"
    """Precision of the per-batch products: ``mixed`` (XᵀX in float64, XᵀY in float32 summed in float64), ``float64``
    or ``float32``."""
    batch_tokens: int = 8192
    """Tokens per forward pass; changes no number, so it is not hashed into the metric digest."""
    companions: tuple[str, ...] = ()
    """Companion metrics to measure beside R²_lin (:data:`COMPANIONS`), or ``"all"``."""
    folds: int = 5
    """k of the k-fold interval (companion ``ci``): windows are dealt round-robin into k folds."""
    companion_points: int = 0
    """Measure the companions at only this many of each trained arm's steps, spread evenly (first and last included);
    0: at every step."""
    lowrank_tol: float = 0.05
    """The Δloss (nats per token) within which the ``lowrank`` companion looks for the smallest rank."""

    def __post_init__(self) -> None:
        raw = self.companions.split(",") if isinstance(self.companions, str) else list(self.companions)
        names = tuple(str(c).strip() for c in raw if str(c).strip())
        object.__setattr__(self, "companions", COMPANIONS if "all" in names else names)
        unknown = [c for c in self.companions if c not in COMPANIONS]
        if unknown:
            raise ConfigError(f"unknown companion metric {unknown[0]!r}; choose from {', '.join(COMPANIONS)} or all")
        if "ci" in self.companions and not (isinstance(self.folds, int) and self.folds >= 2):
            raise ConfigError(f"folds must be ≥ 2 for a k-fold interval, got {self.folds}")
        if not (isinstance(self.heldout_frac, int | float) and 0.0 < self.heldout_frac < 1.0):
            raise ConfigError(f"heldout-frac must lie in (0, 1), got {self.heldout_frac}")
        if self.split not in ("random", "tail"):
            raise ConfigError(f"split must be 'random' or 'tail', got {self.split!r}")
        if self.compute_dtype not in PRECISION_NAMES:
            raise ConfigError(f"compute_dtype must be one of {', '.join(PRECISION_NAMES)}, got {self.compute_dtype!r}")
        _finite(self.rcond, "rcond", 0.0, 1.0, open_low=True)
        _seed(self.seed, "metric seed")
        if not (isinstance(self.batch_tokens, int) and self.batch_tokens >= 1):
            raise ConfigError(f"batch_tokens must be a positive integer, got {self.batch_tokens!r}")
        _finite(self.lowrank_tol, "lowrank_tol", 0.0)
        if not (isinstance(self.companion_points, int) and self.companion_points >= 0):
            raise ConfigError(f"companion_points must be an integer ≥ 0, got {self.companion_points!r}")

    def core(self) -> MetricConfig:
        """This config without companion metrics: what decides R²_lin itself."""
        return replace(self, companions=(), companion_points=0)

    def at(self, index: int, count: int) -> MetricConfig:
        """The config of an arm's ``index``-th of ``count`` measured steps: with the companions at
        ``companion_points`` steps spread evenly (first and last included), without them elsewhere."""
        if not self.companions or not self.companion_points or self.companion_points >= count:
            return self
        chosen = {round(k * (count - 1) / max(1, self.companion_points - 1)) for k in range(self.companion_points)}
        return self if index in chosen else self.core()

    def digest(self) -> str:
        """16 hex digits of every setting that can change a number, and :data:`METRIC_VERSION`."""
        values = asdict(self)
        values.pop("batch_tokens")
        values.pop("companion_points")
        if not self.companions:  # digests of plain R²_lin configs stay what they were before companions
            values.pop("companions")
        if "ci" not in self.companions:
            values.pop("folds")
        if "lowrank" not in self.companions:
            values.pop("lowrank_tol")
        values["metric_version"] = METRIC_VERSION
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DataSpec:
    """Evaluation text and the window budget.

    ``kind``: ``text`` (a UTF-8 file, documents separated by blank lines), ``parquet`` (a local parquet
    file's ``column``), ``dataset`` (``REPO:PATH``, a parquet file of a Hub dataset repo) or ``embedded``
    (``path`` names a corpus shipped with every machine, ``stdlib`` by default; its evaluation part is
    disjoint from its training part).  ``tokens`` are cut into ``tokens // seq_len`` windows.
    ``allow_long`` lets windows run past a rotary model's ``max_position_embeddings`` (a model with
    learned absolute positions has no embedding there, so it is refused either way); it changes no number.
    ``seed`` orders the documents and picks where in each the windows are cut; ``max_doc_share`` caps the
    windows one document gives (:func:`trajectory.data.tokens.windows`).
    """

    kind: str = "embedded"
    """Where the evaluation text comes from: ``text``, ``parquet``, ``dataset`` (``REPO:PATH`` on the Hub) or
    ``embedded``."""
    path: str = ""
    """The text file, parquet file, ``REPO:PATH``, or the embedded corpus's name (``stdlib`` when empty)."""
    column: str = "text"
    """The parquet column that holds the text (``parquet`` and ``dataset``)."""
    tokens: int = DEFAULT_TOKENS
    """Evaluation tokens per measurement (train plus held-out); give ≥ 20 × d_model train tokens."""
    seq_len: int = DEFAULT_SEQ_LEN
    """Tokens per window; the text is cut into ``tokens // seq_len`` windows."""
    allow_long: bool = False
    """Let windows run past a rotary model's ``max_position_embeddings`` (learned positions are refused either way)."""
    seed: int = 0
    """Orders the documents and picks where in each the windows are cut (:func:`trajectory.data.tokens.windows`)."""
    max_doc_share: float = DEFAULT_MAX_DOC_SHARE
    """The most of the windows one document gives while unused documents remain."""

    def __post_init__(self) -> None:
        _seed(self.seed, "[data] seed")
        _finite(self.max_doc_share, "[data] max_doc_share", 0.0, 1.0, open_low=True)
        if self.kind not in DATA_KINDS:
            raise ConfigError(f"evaluation data kind must be one of {', '.join(DATA_KINDS)}, got {self.kind!r}")
        if self.kind != "embedded" and not (isinstance(self.path, str) and self.path):
            raise ConfigError(f"evaluation data of kind {self.kind!r} needs a path")
        for name in ("tokens", "seq_len"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool)):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
        if self.seq_len < 2 or self.tokens < self.seq_len:
            raise ConfigError(f"need tokens ≥ seq-len ≥ 2, got tokens={self.tokens}, seq-len={self.seq_len}")

    def describe(self) -> str:
        return f"{self.kind}:{self.path}" + (f"[{self.column}]" if self.kind in ("parquet", "dataset") else "")


# -- how the twin trains -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TwinSpec:
    """Training of the random-init twin (Pythia's optimiser shape; :mod:`trajectory.arms.training`).

    ``steps`` optimiser updates of ``batch_tokens`` tokens in windows of ``seq_len``; AdamW with peak
    ``lr``, linear warm-up over ``warmup_frac`` of the updates, cosine decay to ``min_lr_frac · lr``,
    decoupled ``weight_decay`` on matrices and embeddings, ``betas`` (``beta1``, ``beta2``), ``eps``, the
    gradient norm clipped to ``clip``.  Each seed of ``seeds`` is its own run: its own init draw and, for text
    sources, its own data order (shard sources keep Pythia's order for every seed).  ``train_data``:
    ``embedded``, ``text:PATH``, ``shards:PREFIX`` or ``hub-shards:REPO[@COMMIT]``, or a control: ``random``
    or ``shuffled:SOURCE`` (:mod:`trajectory.data.traindata`).  ``regulariser`` adds a term to the loss
    (:class:`~trajectory.variants.Regulariser`).
    ``save_checkpoints`` also writes each measured step as a model folder.  ``threads``: the torch
    threads every seed trains and is measured with, whatever ``--workers`` gives the process: a float sum
    splits into per-thread partial sums, so another count can round a weight differently; the count is
    hashed into the run's digest, so a run resumed under another count is a new run, never a mixed one.
    """

    steps: int = 2000
    """Optimiser updates of the whole run."""
    batch_tokens: int = 2048
    """Training tokens per update."""
    seq_len: int = 128
    """Tokens per training row."""
    lr: float = 1e-3
    """Peak learning rate of AdamW."""
    warmup_frac: float = 0.01
    """Share of the updates over which the learning rate rises linearly to ``lr``."""
    min_lr_frac: float = 0.1
    """The cosine decay ends at ``min_lr_frac · lr``."""
    weight_decay: float = 0.1
    """Decoupled weight decay on matrices and embeddings (not on biases or norms)."""
    beta1: float = 0.9
    """AdamW's β₁."""
    beta2: float = 0.95
    """AdamW's β₂."""
    eps: float = 1e-8
    """AdamW's ε (> 0)."""
    clip: float = 1.0
    """The gradient norm is clipped to this (0: no clipping)."""
    seeds: tuple[int, ...] = (0,)
    """One run per seed: seed s starts from random-init seed s's draw (and, for text sources, has its own data
    order)."""
    save_checkpoints: bool = False
    """Also write each measured step as a model folder (``checkpoints/step<t>/``)."""
    train_data: str = "embedded"
    """``embedded``, ``text:PATH``, ``shards:PREFIX`` or ``hub-shards:REPO[@COMMIT]``, or a control: ``random``
    or ``shuffled:SOURCE`` (:mod:`trajectory.data.traindata`)."""
    regulariser: Regulariser | None = None
    """A term added to the loss (:class:`~trajectory.variants.Regulariser`); None: none."""
    threads: int = 1
    """Torch threads each seed trains with, whatever ``--workers`` is (in the run digest: a resume under another
    count is a new run, never a mixed one)."""

    def __post_init__(self) -> None:
        for name, low in (("steps", 1), ("batch_tokens", 1), ("seq_len", 2), ("threads", 1)):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
                raise ConfigError(f"[twin] {name} must be an integer ≥ {low}, got {value!r}")
        if self.batch_tokens < self.seq_len:  # one window per update would silently train seq_len tokens
            raise ConfigError(f"[twin] batch_tokens must be ≥ seq_len ({self.seq_len}), got {self.batch_tokens}")
        _finite(self.lr, "[twin] lr", 0.0, 10.0, open_low=True)
        for name in ("warmup_frac", "min_lr_frac"):
            _finite(getattr(self, name), f"[twin] {name}", 0.0, 1.0)
        for name in ("beta1", "beta2"):  # AdamW divides by 1 − βᵗ: β = 1 fails at the first update
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value < 1.0):
                raise ConfigError(f"[twin] {name} must be a finite number in [0.0, 1.0), got {value!r}")
        _finite(self.weight_decay, "[twin] weight_decay", 0.0)
        _finite(self.clip, "[twin] clip", 0.0, open_low=True)  # clip = 0 scales every gradient to zero
        _finite(self.eps, "[twin] eps", 0.0, open_low=True)  # eps = 0 divides 0 by 0 for a never-seen token's row
        seeds = (self.seeds,) if isinstance(self.seeds, int) else tuple(self.seeds)
        if not seeds:
            raise ConfigError("[twin] seeds must name at least one seed")
        object.__setattr__(self, "seeds", tuple(_seed(s, "[twin] seed") for s in seeds))

    @property
    def per_batch(self) -> int:
        """Windows per update."""
        return max(1, self.batch_tokens // self.seq_len)

    def training_fields(self) -> dict:
        """The settings that decide a trained weight (hashed into a run's digest): all but seeds and saving.
        No regulariser adds no key, so an unregularised run keeps the digest it had before regularisers existed."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("seeds", "save_checkpoints")}
        reg = out.pop("regulariser")
        return out if reg is None else {**out, "regulariser": asdict(reg)}


# -- an experiment -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Manifest:
    """One experiment (``manifests/<name>.toml``; see :mod:`trajectory.manifest` for the TOML).

    ``repo`` is a Hub id or a local folder of checkpoints; ``model_config`` an inline architecture for
    models that exist only as a config; ``tokenizer`` overrides the repo's (a Hub id, a folder, or
    ``embedded:VOCAB``).  ``random_init_seeds`` are the untrained draws, initialised by ``init_scheme``
    (:data:`INIT_SCHEMES`; None: the family's real init), and ``band_coverage`` is the coverage of the
    prediction band they give (:mod:`trajectory.verdicts`); ``twin`` the training of our own run,
    ``twin_variants`` its variants (name, spec: ``[twin.variants.NAME]``, each the arm ``twin:NAME``) and
    ``perturbation`` the perturbation null of one of its seeds (the arm ``twin:perturbation``).
    ``store_dir`` holds the results; ``prefetch`` revisions download ahead; ``workers`` processes run
    units in parallel.  ``reference_profile`` is a published final-step profile to draw.
    """

    name: str
    """The experiment's name: it names the store folder and ``figures/<name>/``."""
    source: Path
    """The manifest file this was read from."""
    arms: tuple[str, ...]
    """The arms to run, drawn from ``hub``, ``local``, ``random-init`` and ``twin``."""
    repo: str | None = None
    """A Hub id ``ORG/NAME`` or a local folder of checkpoint sub-folders."""
    model_config: dict[str, Any] | None = None
    """An inline architecture (a ``config.json`` as a table, with ``model_type``) for a model that exists only as a
    config."""
    tokenizer: str | None = None
    """The tokenizer, when not the repo's own: a Hub id, a folder, or ``embedded:VOCAB``."""
    schedule: Schedule = field(default_factory=lambda: Schedule.from_steps(pythia_steps()))
    """The revisions to measure, listed or found among the repo's branches."""
    data: DataSpec = field(default_factory=DataSpec)
    """The evaluation text and window budget."""
    metric: MetricConfig = field(default_factory=MetricConfig)
    """How R²_lin and its companions are computed."""
    random_init_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """The untrained draws that give the band."""
    init_scheme: str | None = None
    """How the draws are initialised (:data:`INIT_SCHEMES`); None: the family's real init."""
    band_coverage: float = DEFAULT_BAND_COVERAGE
    """Coverage of the random-init prediction band for one new draw."""
    twin: TwinSpec | None = None
    """The training of our own run, when the ``twin`` arm is asked for."""
    twin_variants: tuple[tuple[str, TwinSpec], ...] = ()
    """The twin's variants ``[twin.variants.NAME]`` (name, spec), each the arm ``twin:NAME``."""
    perturbation: PerturbationSpec | None = None
    """The perturbation null of one twin seed (the arm ``twin:perturbation``)."""
    store_dir: Path = Path("store")
    """The folder the results are stored in."""
    prefetch: int = 1
    """Revisions downloaded ahead, in a background thread, while one is measured."""
    workers: int = 1
    """Local processes that run units in parallel."""
    reference_profile: tuple[float, ...] | None = None
    """A published final-step profile (one value per block) drawn beside the measured one."""
    reference_label: str = ""
    """The legend's name for ``reference_profile``."""
    description: str = ""
    """Free text: what the experiment is for."""

    @property
    def model_name(self) -> str:
        """What the ``model`` column says: the repo, or for an inline config the experiment's name."""
        return self.repo or self.name

    def twin_specs(self) -> dict[str, TwinSpec]:
        """Each twin arm (``twin``, then ``twin:NAME`` per variant) → its training spec."""
        if self.twin is None:
            return {}
        return {variant_arm(None): self.twin, **{variant_arm(n): s for n, s in self.twin_variants}}

    def expected_steps(self) -> dict[str, tuple[int, ...]]:
        """Each trained arm's scheduled steps in its own units (a twin's from :func:`.twin_schedule`)."""
        out = {str(arm): self.schedule.steps for arm in (Arm.HUB, Arm.LOCAL)}
        for arm, spec in self.twin_specs().items():
            out[arm] = tuple(t for t, _ in twin_schedule(self.schedule.steps, spec.steps))
        if self.perturbation is not None and self.twin is not None:
            out[variant_arm(PERTURBATION)] = perturbation_steps(out[str(Arm.TWIN)], self.perturbation.points)
        return out

    def total_steps(self) -> dict[str, int]:
        """Each trained arm's total training steps: the schedule's end, or a twin's update budget."""
        out = {str(arm): self.schedule.steps[-1] for arm in (Arm.HUB, Arm.LOCAL)}
        out |= {arm: spec.steps for arm, spec in self.twin_specs().items()}
        if self.perturbation is not None and self.twin is not None:
            out[variant_arm(PERTURBATION)] = self.twin.steps
        return out
