"""What every figure shares: who and what was measured (for titles), the step axis, and saving.

A :class:`FigureContext` is built from the manifest and the store's frame only;
figures never recompute a number.  Every figure is written as PNG and SVG into
one folder and its drawing function returns a :class:`Drawn` naming the files
and holding, as polars frames, exactly the data it drew.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.ticker import NullLocator

from ..atomic import atomic_write
from ..config import ARM_LABELS as _ARM_LABELS
from ..config import DEFAULT_BAND_COVERAGE

METRIC_LABELS = {
    "r2_lin": "R²_lin (held-out R² of the affine fit, unitless)",
    "r2_lin_global": "global R²_lin (held-out, unitless)",
    "r2_median_dim": "median per-dimension R² (held-out, unitless)",
    "r2_lin_inf": "R²_lin extrapolated to unlimited train rows (unitless)",
    "token_tail_top1": "share of the block's held-out SSE on its top 1% of tokens",
}
ARM_LABELS = {str(arm): label for arm, label in _ARM_LABELS.items()}
ARM_COLOURS = {"hub": "#1f4e9c", "local": "#1f4e9c", "twin": "#d1495b", "run": "#2a9d4b"}
#: Colours of the twin's variants (``twin:NAME``), in the order of their names.
VARIANT_COLOURS = ("#17becf", "#e9a03b", "#8e5ea2", "#6c757d", "#3d348b", "#7a9e2f")


def arm_colour(arm: str, arms: list[str] | None = None) -> str:
    """An arm's colour: its own, or a variant's by its place among ``arms``' variants."""
    if arm in ARM_COLOURS:
        return ARM_COLOURS[arm]
    others = sorted(a for a in (arms or [arm]) if a not in ARM_COLOURS)
    return VARIANT_COLOURS[others.index(arm) % len(VARIANT_COLOURS)] if arm in others else VARIANT_COLOURS[0]


#: How a trained arm's seeds are told apart: the arm keeps its colour, its k-th seed (in seed order) takes the
#: k-th (line style, marker), cycling; every seed has its own legend entry.
SEED_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v"), ((0, (1, 3)), "P"))


def seed_style(seeds: list[int], seed: int) -> tuple:
    """(line style, marker) of ``seed`` among an arm's ``seeds`` (:data:`SEED_STYLES`)."""
    return SEED_STYLES[sorted(seeds).index(seed) % len(SEED_STYLES)]


def seeds_mean(frame: pl.DataFrame, arm: str) -> str:
    """``, mean of 2 seeds`` when the arm has several (each value drawn is their mean), else nothing: a figure
    that averages seeds says so."""
    n = frame.filter(pl.col("arm") == arm)["seed"].n_unique()
    return f", mean of {n} seeds" if n > 1 else ""


FORMATS = ("png", "svg")
SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")  # plain text: mathtext is slow to lay out
_SHARD = re.compile(r"-\d{5}-of-\d{5}(?=\.parquet$)")


@dataclass(frozen=True)
class Drawn:
    """One figure: its files and the data it drew (``data[name]`` is a polars frame).

    A figure the store cannot support is not drawn: no ``paths``, and ``skipped`` says why.
    """

    name: str
    paths: tuple[Path, ...]
    data: dict[str, pl.DataFrame] = field(default_factory=dict)
    skipped: str = ""


@dataclass(frozen=True)
class FigureContext:
    """Titles and axes: model, evaluation data, the schedule, and each arm's total training steps."""

    experiment: str
    model: str
    data_label: str
    data_hash: str
    expected: dict[str, tuple[int, ...]] = field(default_factory=dict)  # arm -> its scheduled steps
    totals: dict[str, int] = field(default_factory=dict)
    reference: tuple[float, ...] | None = None
    reference_label: str = ""
    metric: str = "r2_lin"
    coverage: float = DEFAULT_BAND_COVERAGE  # of the random-init prediction band
    log_until: int | None = None  # step axes: logarithmic up to this step, linear after (None: symlog)

    def band_label(self, n_seeds: int | None) -> str:
        """The legend of the random-init band: what it is and how many seeds it rests on."""
        return (
            f"random init: {self.coverage:.0%} prediction band for one new draw "
            f"(mean ± t·sd·√(1+1/S), S = {n_seeds or 0} seeds)"
        )

    @property
    def metric_label(self) -> str:
        return METRIC_LABELS.get(self.metric, f"{self.metric} (unitless)")

    def title(self, what: str) -> str:
        """Two lines: what is drawn and for which model; then the evaluation data."""
        return f"{what} — {self.model}\neval data: {self.data_label} · data_hash {self.data_hash}"


def data_label(manifest) -> str:
    """A short description of a manifest's evaluation text, e.g. ``wikitext:wikitext-103-raw-v1/validation``."""
    d = manifest.data
    if d.kind == "dataset":
        repo, _, path = d.path.partition(":")
        where = f"{repo.split('/')[-1]}:{_SHARD.sub('', path).removesuffix('.parquet')}"
    elif d.kind == "embedded":
        where = f"embedded corpus {d.path}".strip()
    else:
        where = Path(d.path).name
    return f"{where}, {d.tokens} tokens in {d.seq_len}-token windows"


def stored_data_label(frame: pl.DataFrame) -> str:
    """The evaluation data of a store read without its manifest: only its hash and size are recorded."""
    sizes = sorted({a + b for a, b in frame.select("n_train", "n_test").drop_nulls().unique().iter_rows()})
    size = f"{sizes[0]} tokens, " if len(sizes) == 1 else ""
    return f"{size}text not recorded (store read without its manifest)"


def model_label(manifest) -> str:
    """The Hub id or folder, or for an inline config its family and shape."""
    if manifest.repo:
        return manifest.repo
    c = manifest.model_config or {}
    return (
        f"{c.get('model_type')} d={c.get('hidden_size', '?')}, {c.get('num_hidden_layers', '?')} blocks "
        f"(inline config, experiment {manifest.name})"
    )


def context_from(manifest, frame: pl.DataFrame, metric: str = "r2_lin") -> FigureContext:
    """The context of ``manifest``'s experiment, with the data hash(es) found in ``frame``.

    ``manifest`` is a :class:`~trajectory.config.Manifest`, or for a store read without one a
    :class:`~trajectory.stored.StoredExperiment`, whose data is described by the rows alone."""
    hashes = sorted(h for h in frame["data_hash"].unique().to_list() if h)
    return FigureContext(
        experiment=manifest.name,
        model=model_label(manifest),
        data_label=data_label(manifest) if manifest.data is not None else stored_data_label(frame),
        data_hash=", ".join(hashes) or "unknown",
        expected=manifest.expected_steps(),
        totals=manifest.total_steps(),
        reference=manifest.reference_profile,
        reference_label=manifest.reference_label,
        metric=metric,
        coverage=manifest.band_coverage,
        log_until=doubling_phase_end(next(iter(manifest.expected_steps().values()), ())),
    )


#: A schedule whose evenly spaced part reaches at most this many times past its doubling phase is drawn on a
#: log-then-linear axis; a longer one (Pythia's: 143,000 / 512 ≈ 280) on symlog, decades evenly.
LOG_LINEAR_SPAN = 32


def doubling_phase_end(steps) -> int | None:
    """The last step ``L`` of a schedule's doubling phase (0, 1, 2, 4, …, L all measured) when the steps
    after it reach no further than ``LOG_LINEAR_SPAN · L``: where the axis turns linear.  Else None."""
    have = set(steps)
    end = 1 if 1 in have else None
    while end is not None and 2 * end in have:
        end *= 2
    if end is None or end < 4 or not steps or max(steps) > LOG_LINEAR_SPAN * end:
        return None
    return end


def save(fig, out: Path, name: str) -> tuple[Path, ...]:
    """Write ``fig`` as ``out/name.png`` (150 dpi) and ``out/name.svg``, then close it.

    Each file is written atomically (a full disk leaves the old figure or none, never half of one).
    The same store gives the same bytes: the SVG carries no date and its element ids are salted with
    ``name`` instead of drawn at random, so re-drawing committed figures changes nothing in git.
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = tuple(out / f"{name}.{fmt}" for fmt in FORMATS)
    with matplotlib.rc_context({"svg.hashsalt": name}):
        for path in paths:
            meta = {"Date": None} if path.suffix == ".svg" else None
            atomic_write(path, lambda tmp, f=path.suffix[1:], m=meta: fig.savefig(tmp, format=f, dpi=150, metadata=m))
            fig.set_layout_engine("none")  # keep the layout solved for the first file; re-solving is slow
    plt.close(fig)
    return paths


STEP_LABEL = "training step (optimizer updates; symlog: linear in [0, 1])"


def step_axis(ax, last: int, label: str = STEP_LABEL, log_until: int | None = None) -> None:
    """A logarithmic step axis that still shows step 0: symlog, linear below 1; or, with ``log_until``, the
    log-then-linear axis of :func:`log_linear_axis`."""
    if log_until:
        log_linear_axis(ax, last, log_until, label if label != STEP_LABEL else None)
        return
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.4)
    ax.set_xlim(-0.2, max(last, 1) * 1.4)
    decades = range(0, math.floor(math.log10(max(last, 1))) + 1)
    ax.set_xticks([0] + [10**k for k in decades], ["0"] + [f"10{str(k).translate(SUPERSCRIPT)}" for k in decades])
    ax.xaxis.set_minor_locator(NullLocator())  # symlog's default minor ticks are slow and cluttered
    ax.set_xlabel(label)


def step_label(log_until: int | None) -> str:
    """The x label of a step axis (:func:`step_axis`)."""
    if log_until:
        return f"training step (optimizer updates; logarithmic to {log_until}, linear after)"
    return STEP_LABEL


def log_linear_axis(ax, last: int, log_until: int, label: str | None) -> None:
    """Steps on ``x ↦ log₂(1 + x)`` up to ``L = log_until`` and linearly after it, with the slope matched at
    ``L`` (``log₂(1 + L) + (x − L) / ((1 + L) ln 2)``): the doubling phase of a schedule is spread out as on
    a log axis, and its evenly measured rest keeps equal steps equally wide."""
    knee, slope = math.log2(1 + log_until), 1.0 / ((1 + log_until) * math.log(2))

    def forward(x):
        x = np.asarray(x, dtype=float)
        return np.where(x <= log_until, np.log2(1 + np.maximum(x, -0.99)), knee + (x - log_until) * slope)

    def inverse(y):
        y = np.asarray(y, dtype=float)
        return np.where(y <= knee, np.exp2(y) - 1, log_until + (y - knee) / slope)

    ax.set_xscale("function", functions=(forward, inverse))
    ax.set_xlim(-0.2, last * 1.02)
    doubling = sorted({0, log_until} | {4**k for k in range(int(math.log(log_until, 4)) + 1)})  # 0, 1, 4, 16, …
    step = _nice_step((last - log_until) / 4)
    linear = list(range(step * math.ceil(2 * log_until / step), last + 1, step))
    ax.set_xticks(doubling + linear, [str(t) for t in doubling + linear], fontsize=7)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(label if label is not None else step_label(log_until))


def _nice_step(raw: float) -> int:
    """1, 2 or 5 times a power of ten, at least ``raw``."""
    power = 10 ** math.floor(math.log10(max(raw, 1.0)))
    return int(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def depth_colours(blocks: list[int]):
    """A discrete viridis colour per block (shallow = dark, deep = yellow) and the mappable for a colour bar."""
    n = max(blocks) + 1 if blocks else 1
    cmap = plt.get_cmap("viridis", n)
    norm = matplotlib.colors.BoundaryNorm(np.arange(-0.5, n + 0.5), n)
    return (lambda b: cmap(norm(b))), matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)


def depth_colourbar(fig, mappable, ax, n_blocks: int) -> None:
    bar = fig.colorbar(mappable, ax=ax, pad=0.01)
    bar.set_label("block (depth: 0 = first FFN)")
    bar.set_ticks(range(0, n_blocks, max(1, n_blocks // 12)))


def on_grid(traj: pl.DataFrame, steps: list[int], x: str = "step") -> pl.DataFrame:
    """Per block, one row per expected step; ``value`` is null where nothing was measured (a gap)."""
    blocks = traj["block"].unique().sort()
    grid = pl.DataFrame({"block": blocks}).join(pl.DataFrame({x: pl.Series(steps, dtype=pl.Int64)}), how="cross")
    return grid.join(traj.select("block", x, "value"), on=["block", x], how="left").sort("block", x)
