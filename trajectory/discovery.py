"""Revisions discovered, not listed: a schedule found among a repo's branch names.

``[schedule] rule = "branches"`` (a :class:`BranchRule`) keeps the branches whose *whole* name matches
``pattern``, reads the step (and, when the name carries it, the tokens seen) from the name's groups,
orders them by step and optionally thins them.  OLMo names its checkpoints ``step1000-tokens4B``:

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
#: What asking for the steps of a schedule not yet discovered says.
NOT_DISCOVERED = (
    "[schedule] rule = 'branches' finds the revisions among the repo's branches when a sweep plans its hub or "
    "local arm, and none have been found yet: run `trajectory sweep` on the manifest (with that arm) first"
)


@dataclass(frozen=True)
class BranchRule:
    """``pattern`` (named groups ``step``, optional ``tokens`` and ``unit``), then ``thin`` (every k-th) or
    ``log_points`` (N log-spaced; 0 keeps all): see the module docstring."""

    pattern: str = r"step(?P<step>\d+)(?:-tokens(?P<tokens>\d+)(?P<unit>[KMBGT]?))?"
    """A regular expression that a branch name must match whole, with a group ``step`` and optional ``tokens`` and
    ``unit``."""
    thin: int = 1
    """Keep every k-th matching branch in step order, and the last."""
    log_points: int = 0
    """Keep this many points spaced evenly in log(step), step 0 when present and the last (0: every match)."""

    def __post_init__(self) -> None:
        try:
            groups = set(re.compile(self.pattern).groupindex)
        except (re.error, TypeError) as exc:
            raise ConfigError(f"pattern {self.pattern!r} is not a regular expression: {exc}") from None
        if "step" not in groups or not groups <= {"step", "tokens", "unit"}:
            raise ConfigError(
                f"pattern {self.pattern!r} needs a group (?P<step>…) and may name only step, tokens and unit"
            )
        if not (isinstance(self.thin, int) and not isinstance(self.thin, bool) and self.thin >= 1):
            raise ConfigError(f"thin must be an integer ≥ 1, got {self.thin!r}")
        ok = isinstance(self.log_points, int) and not isinstance(self.log_points, bool)
        if not (ok and self.log_points >= 0 and self.log_points != 1):
            raise ConfigError(f"log_points must be an integer ≥ 2 (0 keeps every match), got {self.log_points!r}")
        if self.thin > 1 and self.log_points:
            raise ConfigError("give thin or log_points, not both")

    def parse(self, name: str) -> tuple[int, int | None] | None:
        """(step, tokens seen or None) that ``name`` carries, or None when its whole name does not match."""
        match = re.fullmatch(self.pattern, name)
        if match is None:
            return None
        groups = match.groupdict()
        if groups.get("tokens") is None:
            return int(match["step"]), None
        unit = groups.get("unit") or ""
        if unit not in TOKEN_UNITS:
            raise ConfigError(f"branch {name!r}: token unit {unit!r} is not one of {', '.join(TOKEN_UNITS)}")
        return int(match["step"]), int(groups["tokens"]) * TOKEN_UNITS[unit]

    def select(self, names: Iterable[str], where: str) -> list[tuple[int, str, int | None]]:
        """(step, name, tokens) of the names that match, in step order, thinned; ``where`` names the repo."""
        found: dict[int, tuple[str, int | None]] = {}
        for name in sorted(set(names)):
            parsed = self.parse(name)
            if parsed is None:
                continue
            step, tokens = parsed
            if step in found:
                raise ConfigError(
                    f"branches {found[step][0]!r} and {name!r} of {where} both carry step {step}; "
                    "narrow [schedule] pattern so that one step has one branch"
                )
            found[step] = (name, tokens)
        if not found:
            raise RevisionNotFoundError(f"no branch of {where} matches [schedule] pattern {self.pattern!r}")
        steps = sorted(found)
        return [(steps[i], *found[steps[i]]) for i in self.keep(steps)]

    def keep(self, steps: list[int]) -> list[int]:
        """Indices of the sorted distinct ``steps`` that thinning keeps (all without thinning)."""
        if self.log_points:
            return log_spaced(steps, self.log_points)
        kept = list(range(0, len(steps), self.thin))
        return kept if kept[-1] == len(steps) - 1 else [*kept, len(steps) - 1]


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
