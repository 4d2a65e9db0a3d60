"""Which steps an experiment measures: the schedule rules, the revision names, and the twin's mapping.

Schedules are data (a manifest names a rule and its numbers): Pythia's 154 checkpoints
(:func:`pythia_steps`), a dense rule for runs we train ourselves (:func:`dense_steps`), an explicit list,
or branches discovered on the Hub (:mod:`trajectory.discovery`).  A leaf module, like :mod:`trajectory.config`,
which re-exports its names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .discovery import NOT_DISCOVERED, BranchRule
from .errors import ConfigError


def pythia_steps(log_until: int = 512, every: int = 1000, last: int = 143_000) -> list[int]:
    """Pythia's 154 checkpoints: 0, the powers of two up to ``log_until``, then every ``every`` to ``last``."""
    steps, p = [0], 1
    while p <= log_until:
        steps.append(p)
        p *= 2
    return steps + list(range(every, last + 1, every))


def dense_steps(log_until: int, points: int, last: int) -> list[int]:
    """0, the powers of two up to ``log_until``, then ``points`` steps evenly spaced after it up to ``last``.

    The doubling phase resolves the first updates, which change a model most; the even phase puts
    ``points`` measurements over the rest of training, so a curve's peak, its return through the band and
    its final exit each fall on measured points (a schedule that only doubles would put them at 2^k).
    """
    if not (1 <= log_until < last and points >= 1):
        raise ConfigError(
            f"a dense schedule needs 1 ≤ log_until < last and points ≥ 1, got {log_until}, {last}, {points}"
        )
    head = pythia_steps(log_until, every=last + 1, last=last)  # 0 and the doubling steps only
    start = head[-1]
    tail = {start + round(k * (last - start) / points) for k in range(1, points + 1)}
    return sorted(set(head) | tail)


def segment_steps(segments) -> list[int]:
    """The union of half-open ranges ``[start, stop)`` taken every ``every``: ``[[start, stop, every], …]``.

    Stanford CRFM's GPT-2 runs: ``[[0, 100, 10], [100, 2000, 50], [2000, 20000, 100], [20000, 401000, 1000]]``
    gives 0, 10, …, 90, 100, 150, …, 1950, 2000, 2100, …, 19900, 20000, 21000, …, 400000 (609 steps).
    """
    ok = isinstance(segments, list) and segments
    for seg in segments if ok else []:
        good = (
            isinstance(seg, list) and len(seg) == 3 and all(isinstance(v, int) and not isinstance(v, bool) for v in seg)
        )
        if not (good and 0 <= seg[0] < seg[1] and seg[2] >= 1):
            raise ConfigError(
                f"segments: each must be [start, stop, every] with 0 ≤ start < stop and every ≥ 1, got {seg!r}"
            )
    if not ok:
        raise ConfigError(f"segments must be a non-empty list of [start, stop, every], got {segments!r}")
    return sorted({step for start, stop, every in segments for step in range(start, stop, every)})


_STEP_NAME = re.compile(r"(\D*?)(\d+)(\D*)")


def step_of(revision: str) -> int | None:
    """The step number a revision name carries (``step1000`` → 1000), or None when it carries none."""
    match = _STEP_NAME.fullmatch(revision.strip())
    return int(match[2]) if match else None


@dataclass(frozen=True)
class Schedule:
    """The training steps to measure and the revision name of each, in step order.

    ``points`` pairs each step with its revision (``step1000``); ``tokens`` (optional, same length) is the
    number of training tokens seen at each point when the name or the manifest says so.  A ``rule`` finds
    the points among the repo's branches when a sweep plans (:mod:`trajectory.discovery`); until then there
    are none, and asking for steps or revisions is an error that says so.
    """

    points: tuple[tuple[int, str], ...]
    """Each measured step with its revision name, in step order."""
    tokens: tuple[int | None, ...] = ()
    """Training tokens seen at each point, when the names or the manifest say so (empty: unknown)."""
    rule: BranchRule | None = None
    """A rule that finds the points among the repo's branches when a sweep plans (None: the points are given)."""

    @property
    def resolved(self) -> bool:
        return bool(self.points) or self.rule is None

    @classmethod
    def from_steps(cls, steps, revision_format: str = "step{step}") -> Schedule:
        steps = sorted(set(int(s) for s in steps))
        return cls(tuple((s, revision_format.format(step=s)) for s in steps))

    @property
    def steps(self) -> tuple[int, ...]:
        return tuple(s for s, _ in self._points())

    def revisions(self) -> list[str]:
        return [r for _, r in self._points()]

    def _points(self) -> tuple[tuple[int, str], ...]:
        if not self.resolved:
            raise ConfigError(NOT_DISCOVERED)
        return self.points

    def tokens_at(self, revision: str) -> int | None:
        lookup = dict(zip(self.revisions(), self.tokens, strict=False))
        return lookup.get(revision)

    def with_tokens_per_step(self, per_step: int) -> Schedule:
        """This schedule with ``tokens = step · per_step`` wherever a point's tokens are not known already
        (a constant batch: Pythia's 1,024 × 2,048 tokens); tokens a revision name gave are kept."""
        known = self.tokens + (None,) * (len(self.points) - len(self.tokens))
        tokens = tuple(t if t is not None else s * per_step for (s, _), t in zip(self.points, known, strict=True))
        return Schedule(self.points, tokens, self.rule)


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers by value: step0, step50, step100 (not step0, step100, step50)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(name)))


def twin_schedule(steps, budget: int) -> list[tuple[int, int]]:
    """(twin step, Pythia-equivalent step) pairs, sorted.

    A manifest step ``s`` of a schedule ending at ``L`` maps to twin step ``round(s · budget / L)`` (the
    same fraction of training); the schedule's early power-of-two steps below ``budget`` are kept as twin
    steps too, because the first updates change a model most.  Each twin step ``t`` is paired with the
    manifest step at the same fraction, ``round(t · L / budget)``.
    """
    last = max(steps)
    if budget < 1 or last < 1:
        raise ConfigError(
            f"[twin] steps must be ≥ 1 and the schedule must reach past step 0, "
            f"got steps={budget}, last scheduled step={last}"
        )
    twin = {round(s * budget / last) for s in steps}
    twin |= {s for s in steps if 0 < s < budget and s & (s - 1) == 0}
    return [(t, round(t * last / budget)) for t in sorted(twin)]


@dataclass(frozen=True)
class RunSchedule:
    """The steps a run tracked in its own training loop measures (:mod:`trajectory.track`): the listed ``steps``,
    and every multiple of ``every`` (0 included) when ``every`` > 0.  A step ``t`` is *after t optimiser updates*."""

    steps: frozenset[int] = frozenset()
    every: int = 0

    def __contains__(self, step: int) -> bool:
        return step in self.steps or (self.every > 0 and step % self.every == 0)

    def up_to(self, last: int) -> list[int]:
        """The scheduled steps ``≤ last``, in order."""
        ruled = range(0, last + 1, self.every) if self.every > 0 else ()
        return sorted({s for s in self.steps if s <= last} | set(ruled))


#: What a tracked run's ``dense`` rule uses at most: the doubling steps up to 64, then 40 even points (as
#: ``manifests/demo.toml``), fewer when the run is shorter.
DENSE_LOG_UNTIL, DENSE_POINTS = 64, 40


def run_schedule(spec, last: int | None = None) -> RunSchedule:
    """The :class:`RunSchedule` of ``spec`` for a run of ``last`` updates.

    ``spec``: ``"pythia"`` (Pythia's 154 steps that fall within ``last``), ``"dense"`` (:func:`dense_steps`
    ending at ``last``: the doubling steps up to ``min(64, last/2)``, then ``min(40, …)`` even points), an
    integer ``k`` (every ``k`` updates: 0, k, 2k, …), an explicit list of steps, or a :class:`RunSchedule`.
    ``pythia`` and ``dense`` need ``last``.
    """
    if isinstance(spec, RunSchedule):
        return spec
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 1:
            raise ConfigError(f"schedule: every k updates needs k ≥ 1, got {spec}")
        return RunSchedule(every=spec)
    if isinstance(spec, str):
        if spec not in ("pythia", "dense"):
            raise ConfigError(f"schedule must be 'pythia', 'dense', an integer k (every k) or a list, got {spec!r}")
        if not (isinstance(last, int) and last >= 2):
            raise ConfigError(f"schedule {spec!r} needs the run's length in updates (≥ 2), got {last!r}")
        if spec == "pythia":
            return RunSchedule(frozenset(s for s in pythia_steps() if s <= last))
        log_until = 1 << (min(DENSE_LOG_UNTIL, last // 2).bit_length() - 1)  # a power of two < last
        return RunSchedule(frozenset(dense_steps(log_until, min(DENSE_POINTS, last - log_until), last)))
    steps = list(spec) if isinstance(spec, list | tuple | set | frozenset | range) else None
    if not steps or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in steps):
        raise ConfigError(f"schedule: a list of steps must be non-empty integers ≥ 0, got {spec!r}")
    return RunSchedule(frozenset(steps))
