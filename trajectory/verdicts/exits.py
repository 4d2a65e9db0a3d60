"""Events of one trained series against a band, and the verdict they give (the rules: :mod:`trajectory.verdicts`).

Pure functions on plain lists, so they apply to any series: one seed's trajectory of one block against
the random-init band, or against a trained band.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

#: A persistent exit counts when it holds for at least this many measured points …
MIN_POINTS = 3
#: … and spans at least this share of training (from its first step to the last measured step).
MIN_FRACTION = 0.1

VERDICTS = ("learned-above", "learned-below", "within-band", "undetermined")


@dataclass(frozen=True)
class Events:
    """One series' events; steps are the series' own (twin steps for the twin).  ``persistent_*`` describe the
    tail of consecutive measured points outside the band on the side of the last one (None: the last is inside);
    ``first_step`` is the first measured step;
    ``persistent_holds`` says whether that tail meets :data:`MIN_POINTS` and :data:`MIN_FRACTION`."""

    final_step: int
    final: float
    first_step: int
    first_exit_step: int | None
    first_exit_direction: str | None
    peak_step: int
    peak: float
    persistent_exit_step: int | None
    persistent_direction: str | None
    persistent_points: int
    persistent_fraction: float | None
    persistent_holds: bool

    def row(self) -> dict:
        return asdict(self)


def side(value: float, low: float | None, high: float | None) -> str | None:
    """``above`` (strictly above ``high``), ``below`` (strictly below ``low``), or None (inside, or no band)."""
    if low is None or high is None:
        return None
    return "above" if value > high else "below" if value < low else None


def series_events(
    steps: list[int],
    values: list[float],
    low: float | None | list[float | None],
    high: float | None | list[float | None],
    total_steps: int,
) -> Events:
    """The events of one series of measured ``(step, value)`` points against the band ``[low, high]`` (one band
    for every point, or a list: each point's own band, e.g. a control's band at that step).

    * first exit: the first measured step strictly outside the band, and on which side;
    * peak: the largest value and its step (the earliest, on a tie);
    * persistent exit: the first step of the longest tail of measured points that all lie outside on the
      side of the last point; it holds when the tail has ≥ :data:`MIN_POINTS` points and spans
      ``(last step − its step) / total_steps ≥`` :data:`MIN_FRACTION` of training.
    """
    if not steps or len(steps) != len(values):
        raise ValueError("a series needs as many values as steps, and at least one")
    n = len(steps)
    lows, highs = (b if isinstance(b, list) else [b] * n for b in (low, high))
    order = sorted(range(n), key=lambda i: steps[i])
    steps, values = [steps[i] for i in order], [values[i] for i in order]
    sides = [side(values[j], lows[i], highs[i]) for j, i in enumerate(order)]
    first = next((i for i, s in enumerate(sides) if s is not None), None)
    peak = max(range(len(values)), key=lambda i: (values[i], -i))
    start = None
    if sides[-1] is not None:
        start = len(sides) - 1
        while start > 0 and sides[start - 1] == sides[-1]:
            start -= 1
    points = 0 if start is None else len(steps) - start
    fraction = None if start is None else (steps[-1] - steps[start]) / max(total_steps, 1)
    return Events(
        final_step=steps[-1],
        final=values[-1],
        first_step=steps[0],
        first_exit_step=None if first is None else steps[first],
        first_exit_direction=None if first is None else sides[first],
        peak_step=steps[peak],
        peak=values[peak],
        persistent_exit_step=None if start is None else steps[start],
        persistent_direction=sides[-1],
        persistent_points=points,
        persistent_fraction=fraction,
        persistent_holds=start is not None and points >= MIN_POINTS and fraction >= MIN_FRACTION,
    )


def series_verdict(ev: Events | None, band: bool, init_warning: str | None = None) -> tuple[str, str]:
    """``(verdict, reason)`` of one series under the rules of :mod:`trajectory.verdicts`."""
    if not band:
        return "undetermined", "no random-init band (fewer than 2 seeds with a usable value)"
    if ev is None:
        return "undetermined", "no usable measured value"
    if init_warning:
        return "undetermined", "step 0 lies outside the random-init band: the band may describe another init"
    if ev.persistent_holds and ev.persistent_exit_step == 0:
        return "undetermined", (
            f"{ev.persistent_direction} the band from step 0 on: the value was there at initialisation, so the "
            "band does not show it was learned"
        )
    if ev.persistent_holds and ev.persistent_exit_step == ev.first_step:  # no step 0 measured: no point inside
        return "undetermined", (
            f"{ev.persistent_direction} the band from its first measured step ({ev.first_step}) on, with no step 0: "
            "no measured value lies inside the band, so it does not show the value was learned rather than there "
            "at initialisation"
        )
    if ev.persistent_holds:
        return f"learned-{ev.persistent_direction}", (
            f"{ev.persistent_direction} the band from step {ev.persistent_exit_step} through the last measured "
            f"step {ev.final_step} ({ev.persistent_points} points, {ev.persistent_fraction:.0%} of training)"
        )
    if ev.persistent_exit_step is not None:
        return "undetermined", (
            f"{ev.persistent_direction} the band since step {ev.persistent_exit_step} ({ev.persistent_points} "
            f"points, {ev.persistent_fraction:.0%} of training): a persistent exit needs ≥ {MIN_POINTS} points "
            f"and ≥ {MIN_FRACTION:.0%} of training, so not yet"
        )
    left = (
        f"; it left the band {ev.first_exit_direction} at step {ev.first_exit_step} and came back"
        if ev.first_exit_step is not None
        else "; it never left the band"
    )
    return "within-band", f"the last measured value (step {ev.final_step}) is inside the band{left}"


def agreed(verdicts: dict[int, tuple[str, str]]) -> tuple[str, str]:
    """One block's verdict over its seeds: theirs when every seed has the same, else undetermined."""
    if not verdicts:
        return "undetermined", "no usable measured value"
    kinds = {v for v, _ in verdicts.values()}
    if len(kinds) == 1:
        verdict = kinds.pop()
        if len(verdicts) == 1:
            return next(iter(verdicts.values()))
        return verdict, f"all {len(verdicts)} seeds: " + "; ".join(
            f"seed {s}: {r}" for s, (_, r) in sorted(verdicts.items())
        )
    listed = ", ".join(f"seed {s} {v}" for s, (v, _) in sorted(verdicts.items()))
    return "undetermined", f"the seeds' verdicts differ: {listed}"


def z_score(value: float | None, mean: float | None, sd: float | None) -> float | None:
    """``(value − mean) / sd``; None when any is missing or sd is not positive."""
    if value is None or mean is None or sd is None or not sd > 0 or not math.isfinite(sd):
        return None
    return (value - mean) / sd
