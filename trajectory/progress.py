"""Progress, one kind for every long job: a bar on a terminal, plain lines in a log.

``tqdm(disable=None)`` draws only when stderr is a terminal, so a redirected run writes no ``\\r``
floods into its log.  Off a terminal a job that asks for it (``log=True``: a sweep's units) writes one line
``trajectory: <desc> <n>/<total> done`` to stderr whenever its count advances, so a log shows each finished
unit; ``enabled=False`` (``--no-progress``) silences both.
"""

from __future__ import annotations

import sys


class LogProgress:
    """The bar's interface (``update``, ``set_postfix``, a context manager) as one stderr line per advance."""

    def __init__(self, total: int | None, desc: str, initial: int = 0) -> None:
        self.total, self.desc, self.n = total, desc, initial

    def update(self, n: int = 1) -> None:
        if n <= 0:
            return
        self.n += n
        of = f"/{self.total}" if self.total is not None else ""
        print(f"trajectory: {self.desc} {self.n}{of} done", file=sys.stderr, flush=True)

    def set_postfix(self, *args, **kwargs) -> None:
        """Postfixes are for a live bar; a log gets the counts only."""

    def close(self) -> None:
        """Nothing to tear down."""

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: int | None, desc: str, unit: str, enabled: bool = True, initial: int = 0, log: bool = False):
    """A tqdm bar on a terminal; off one, a :class:`LogProgress` when ``log``, else a silent bar."""
    if enabled and log and not sys.stderr.isatty():
        return LogProgress(total, desc, initial)
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
