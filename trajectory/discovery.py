"""Revisions discovered, not listed: a schedule found among the names a suite gives its checkpoints.

A :class:`BranchRule` reads one of three listings, as ``[schedule] rule`` says:

* ``"branches"``: the repo's branch and tag names (OLMo, SmolLM2, BLOOM);
* ``"commits"``: the titles of the commits on one ``branch`` (Pico: one commit per checkpoint, titled
  ``… -- Step N``); the revision is then the commit's id;
* ``"repos"``: the names of the model repos of one author (``[model] repo`` is then the author), one repo per
  checkpoint (MultiBERTs ``multiberts-seed_0-step_20k``, TinyLlama ``…-intermediate-step-1431k-3T``); the
  revision is then the repo's name, and its ``main`` is measured.

It keeps the names whose *whole* text matches ``pattern``, reads the step (times ``step_scale``, for names
that count in thousands) and, when the name carries it, the tokens seen from the name's groups, orders them by
step and optionally thins them.  Where names carry no step (LLM360 Amber's ``ckpt_000``), ``step_map`` gives
each kept name its step and tokens, as the suite publishes them.  OLMo names its checkpoints
``step1000-tokens4B``:

    step(?P<step>\\d+)-tokens(?P<tokens>\\d+)(?P<unit>B)   →   (1000, "step1000-tokens4B", 4·10⁹)

The token count is the name's, as rounded by the publisher to whole units (OLMo-1B's step 10000 is named
``tokens41B`` for 10000 × 4,194,304 = 41.9·10⁹), not a count of its own.

Thinning, on the matches in step order (``s_0 < … < s_{m−1}``):

* ``thin = k`` keeps ``s_0, s_k, s_2k, …`` and always the last, ``s_{m−1}``;
* ``log_points = N`` keeps exactly ``min(N, m)`` points spaced evenly in log(step): ``s_0`` when it is 0,
  then for targets t_j = exp(log s_lo + j/(K−1) · (log s_{m−1} − log s_lo)), j = 0 … K−1 (s_lo the
  first positive step, K the points still to choose), the step nearest t_j in log distance among those
  after the previous pick, leaving one step for each later target.  The last step is always kept (and
  the first positive one when K ≥ 2); where the grid is coarser than the targets (OLMo's steps come
  every 1,000), a crowded early target takes the next free step instead of repeating one.

The listing happens where the Hub is, when the sweep plans (:class:`trajectory.arms.checkpoints.CheckpointArm`);
this module only parses and selects, so it is a leaf with no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ConfigError, RevisionNotFoundError

#: Multipliers of a token count's unit in a branch name (``tokens4B`` = 4·10⁹).
TOKEN_UNITS = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
#: The listings a rule can read (see the module docstring).
LISTINGS = ("branches", "commits", "repos")
#: What asking for the steps of a schedule not yet discovered says.
NOT_DISCOVERED = (
    "[schedule] rule = 'branches', 'commits' or 'repos' finds the revisions when a sweep plans its hub or "
    "local arm, and none have been found yet: run `trajectory sweep` on the manifest (with that arm) first"
)


@dataclass(frozen=True)
class BranchRule:
    """Which listing (``rule``: branches, commits of ``branch``, or repos), ``pattern`` (named groups ``step``,
    optional ``tokens`` and ``unit``; no ``step`` group when ``step_map`` gives the steps), the step's
    ``step_scale``, then ``thin`` (every k-th) or ``log_points`` (N log-spaced; 0 keeps all): see the module
    docstring.  ``step_map``: (name, step, tokens or None) triples."""

    pattern: str = r"step(?P<step>\d+)(?:-tokens(?P<tokens>[\d.]+)(?P<unit>[KMBGT]?))?"
    """A regular expression that a listed name (branch, commit title or repo name) must match whole, with a group
    ``step`` (unless ``step_map`` gives the steps) and optional ``tokens`` and ``unit``."""
    thin: int = 1
    """Keep every k-th matching branch in step order, and the last."""
    log_points: int = 0
    """Keep this many points spaced evenly in log(step), step 0 when present and the last (0: every match)."""
    rule: str = "branches"
    """Which listing: ``branches`` (branch and tag names), ``commits`` (commit titles on ``branch``) or ``repos``
    (the model repos of the author that ``[model] repo`` names)."""
    branch: str = "main"
    """With ``rule = "commits"``: the branch whose history is listed."""
    step_scale: int = 1
    """The step is the ``step`` group times this (1000 for names that count in thousands, MultiBERTs' ``20k``)."""
    step_map: tuple[tuple[str, int, int | None], ...] = ()
    """``[schedule.step_map]``: ``NAME = { step = S, tokens = T }`` for names that carry no step (Amber)."""

    def __post_init__(self) -> None:
        if isinstance(self.step_map, dict):  # a manifest's [schedule.step_map] table
            object.__setattr__(self, "step_map", step_map_entries(self.step_map))
        try:
            groups = set(re.compile(self.pattern).groupindex)
        except (re.error, TypeError) as exc:
            raise ConfigError(f"pattern {self.pattern!r} is not a regular expression: {exc}") from None
        need = set() if self.step_map else {"step"}
        if not need <= groups or not groups <= {"step", "tokens", "unit"}:
            raise ConfigError(
                f"pattern {self.pattern!r} needs a group (?P<step>…) (or a step_map) and may name only step, "
                "tokens and unit"
            )
        if self.rule not in LISTINGS:
            raise ConfigError(f"rule must be one of {', '.join(LISTINGS)}, got {self.rule!r}")
        if not (isinstance(self.step_scale, int) and not isinstance(self.step_scale, bool) and self.step_scale >= 1):
            raise ConfigError(f"step_scale must be an integer ≥ 1, got {self.step_scale!r}")
        if not (isinstance(self.branch, str) and self.branch):
            raise ConfigError(f"branch must be a branch name, got {self.branch!r}")
        if not (isinstance(self.thin, int) and not isinstance(self.thin, bool) and self.thin >= 1):
            raise ConfigError(f"thin must be an integer ≥ 1, got {self.thin!r}")
        ok = isinstance(self.log_points, int) and not isinstance(self.log_points, bool)
        if not (ok and self.log_points >= 0 and self.log_points != 1):
            raise ConfigError(f"log_points must be an integer ≥ 2 (0 keeps every match), got {self.log_points!r}")
        if self.thin > 1 and self.log_points:
            raise ConfigError("give thin or log_points, not both")

    def parse(self, name: str) -> tuple[int, int | None] | None:
        """(step, tokens seen or None) that ``name`` carries (or ``step_map`` gives it), or None when its whole
        name does not match (or the map does not name it)."""
        match = re.fullmatch(self.pattern, name)
        if match is None:
            return None
        if self.step_map:
            mapped = {n: (s, t) for n, s, t in self.step_map}
            return mapped.get(name)
        groups = match.groupdict()
        step = int(match["step"]) * self.step_scale
        if groups.get("tokens") is None:
            return step, None
        unit = groups.get("unit") or ""
        if unit not in TOKEN_UNITS:
            raise ConfigError(f"{self.noun} {name!r}: token unit {unit!r} is not one of {', '.join(TOKEN_UNITS)}")
        return step, round(float(groups["tokens"]) * TOKEN_UNITS[unit])

    @property
    def noun(self) -> str:
        """What one listed name is: a branch, a commit title or a repo name."""
        return {"branches": "branch", "commits": "commit titled", "repos": "repo"}[self.rule]

    def select(self, names: Iterable[str], where: str) -> list[tuple[int, str, int | None]]:
        """(step, name, tokens) of the names that match, in step order, thinned; ``where`` names the repo."""
        return self.select_labelled(((n, n) for n in names), where)

    def select_labelled(self, items: Iterable[tuple[str, str]], where: str) -> list[tuple[int, str, int | None]]:
        """As :meth:`select`, for (label, revision) pairs whose label carries the step (a commit's title and
        its id): (step, revision, tokens)."""
        found: dict[int, tuple[str, int | None, str]] = {}
        for label, revision in sorted(set(items)):
            parsed = self.parse(label)
            if parsed is None:
                continue
            step, tokens = parsed
            if step in found:
                raise ConfigError(
                    f"{self.noun} {found[step][2]!r} and {label!r} of {where} both carry step {step}; "
                    f"narrow [schedule] pattern so that one step has one {self.noun.split()[0]}"
                )
            found[step] = (revision, tokens, label)
        if not found:
            raise RevisionNotFoundError(f"no {self.noun} of {where} matches [schedule] pattern {self.pattern!r}")
        steps = sorted(found)
        return [(steps[i], *found[steps[i]][:2]) for i in self.keep(steps)]

    def keep(self, steps: list[int]) -> list[int]:
        """Indices of the sorted distinct ``steps`` that thinning keeps (all without thinning)."""
        if self.log_points:
            return log_spaced(steps, self.log_points)
        kept = list(range(0, len(steps), self.thin))
        return kept if kept[-1] == len(steps) - 1 else [*kept, len(steps) - 1]


def step_map_entries(table) -> tuple[tuple[str, int, int | None], ...]:
    """``[schedule.step_map]``, ``NAME = { step = S, tokens = T }`` (tokens optional) → (name, step, tokens)
    triples in step order; ``{}`` → ``()``."""

    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if not isinstance(table, dict):
        raise ConfigError(f"step_map must be a table of NAME = {{ step = S, tokens = T }}, got {table!r}")
    entries = []
    for name, entry in table.items():
        ok = isinstance(entry, dict) and set(entry) <= {"step", "tokens"} and whole(entry.get("step"))
        if not (ok and (entry.get("tokens") is None or whole(entry["tokens"]))):
            raise ConfigError(f"step_map {name!r} must be {{ step = S, tokens = T }} of whole numbers, got {entry!r}")
        entries.append((name, entry["step"], entry.get("tokens")))
    if len({s for _, s, _ in entries}) != len(entries):
        raise ConfigError("step_map must give distinct steps")
    return tuple(sorted(entries, key=lambda e: e[1]))


def log_spaced(steps: list[int], n: int) -> list[int]:
    """Indices of exactly ``min(n, len(steps))`` of the sorted distinct ``steps``, evenly spaced in log(step)
    (the module docstring gives the rule); step 0, which has no logarithm, is kept when present."""
    m = len(steps)
    if n >= m:
        return list(range(m))
    chosen = [0] if steps[0] == 0 else []
    k = n - len(chosen)  # points to place among the positive steps
    lo, hi = math.log(steps[len(chosen)]), math.log(steps[-1])
    for j in range(k):
        target = lo + (hi - lo) * j / (k - 1) if k > 1 else hi
        first = chosen[-1] + 1 if chosen else 0
        last = m - (k - j)  # leave one step for each target after this one
        chosen.append(min(range(first, last + 1), key=lambda i: abs(math.log(steps[i]) - target)))
    return chosen
