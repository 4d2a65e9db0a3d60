"""Progress bars, one kind for every long job: shown on a terminal, silent in logs.

``tqdm(disable=None)`` draws only when stderr is a terminal, so a redirected run writes no ``\\r``
floods into its log; ``enabled=False`` (``--no-progress``) silences it everywhere.
"""

from __future__ import annotations


def progress_bar(total: int | None, desc: str, unit: str, enabled: bool = True, initial: int = 0):
    """A tqdm bar (a context manager with ``update`` and ``set_postfix``)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=None if enabled else True,
        dynamic_ncols=True,
        leave=False,
    )
