"""The twin's training tokens: where they come from, and which windows each step sees.

``[twin] train_data`` names the source:

* ``embedded`` (or ``embedded:NAME``): the *train* part of an embedded corpus
  (:mod:`trajectory.data.corpus`), whose documents are disjoint from its ``eval`` part;
* ``text:PATH``: a UTF-8 file, documents separated by blank lines;
* ``shards:PREFIX``: Pythia's pre-shuffled Megatron shards (:mod:`trajectory.data.shards`),
  read in their own order, never re-shuffled;
* ``hub-shards:REPO[@COMMIT]``: the same rows of a Hub dataset (Pythia's:
  ``EleutherAI/pile-deduped-pythia-preshuffled``), exactly the rows the twin trains on, fetched by HTTP
  range requests and cached with their provenance (:mod:`trajectory.data.hubshards`);
* controls that keep the optimiser and remove what there is to learn, each drawn from the twin seed ``s``
  (:func:`control_windows`): ``random``, i.i.d. ids uniform over the vocabulary ``{0 … V − 1}``
  (``SeedSequence([s, 4])``); ``shuffled:SOURCE``, the tokens of SOURCE's windows (any source above) permuted
  across the whole stream (``SeedSequence([s, 5])``), so every token's count is kept exactly and every
  context is destroyed.

Text is tokenized with the twin's tokenizer, documents joined by EOS, and cut
into windows of ``seq_len`` tokens; the token stream is cached on disk under
the corpus cache, keyed by the source, the tokenizer and the length.  Step
``t`` (0-based) with ``b`` windows per batch sees the windows at global
positions ``t·b … t·b + b − 1``; position ``i`` is window ``perm_e[i mod n]`` of
epoch ``e = i div n``, where ``perm_e`` is a permutation drawn from
``SeedSequence([seed, e])`` (the identity for shards, local or on the Hub).  So the batch of a step
is a pure function of (source, seed, step): a resumed run sees what an
uninterrupted one would.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_array
from ..errors import ConfigError, DataError


@dataclass(frozen=True)
class TrainTokens:
    """Training windows: ``windows`` (n, seq_len) in memory, or rows of a shard (local or Hub) read on demand."""

    source: str
    data_hash: str
    seq_len: int
    windows: np.ndarray | None = None
    shard: object | None = None

    @property
    def n_windows(self) -> int:
        return len(self.shard) if self.shard is not None else int(self.windows.shape[0])

    def batch(self, step: int, per_batch: int, seed: int) -> np.ndarray:
        """(per_batch, seq_len) int64: the windows step ``step`` trains on."""
        n = self.n_windows
        pos = np.arange(step * per_batch, (step + 1) * per_batch)
        if self.shard is not None:
            return self.shard.rows(pos % n, self.seq_len)
        idx = np.empty(per_batch, dtype=np.int64)
        for epoch in np.unique(pos // n):
            sel = pos // n == epoch
            perm = np.random.default_rng(np.random.SeedSequence([seed, int(epoch)])).permutation(n)
            idx[sel] = perm[pos[sel] % n]
        return self.windows[idx].astype(np.int64)


def _documents(source: str):
    kind, _, arg = source.partition(":")
    if kind == "embedded":
        from .corpus import embedded_documents

        return embedded_documents(arg or "stdlib", "train")
    path = Path(arg)
    if not path.is_file():
        raise DataError(f"twin training text not found: {path}")
    return (doc for doc in path.read_text(encoding="utf-8", errors="replace").split("\n\n") if doc.strip())


def _stream(source: str, tokenizer, n_tokens: int, chunk: int = 64) -> np.ndarray:
    """At most ``n_tokens`` ids of the source, documents joined by EOS (batched for the fast tokenizer)."""
    eos = tokenizer.eos_token_id
    out: list[int] = []
    docs = _documents(source)
    while len(out) < n_tokens:
        group = [d for _, d in zip(range(chunk), docs)]
        if not group:
            break
        for ids in tokenizer(group, add_special_tokens=False)["input_ids"]:
            out.extend(ids + ([eos] if eos is not None else []))
    return np.asarray(out[:n_tokens], dtype=np.int64)


def _cached_stream(source: str, tokenizer, n_tokens: int, cache: Path) -> np.ndarray:
    from .corpus import tokenizer_hash

    fingerprint = source
    if not source.startswith("embedded"):
        st = Path(source.partition(":")[2]).stat()
        fingerprint += f"|{st.st_size}|{st.st_mtime_ns}"
    else:
        from .corpus import document_paths

        fingerprint += "|" + "|".join(
            f"{rel}:{p.stat().st_size}" for rel, p in document_paths(source.partition(":")[2] or "stdlib")
        )
    key = hashlib.sha256(f"{fingerprint}|{tokenizer_hash(tokenizer)}|{n_tokens}".encode()).hexdigest()[:16]
    path = cache / "streams" / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    ids = _stream(source, tokenizer, n_tokens)
    compact = ids.astype(np.uint32 if ids.size and ids.max() >= 2**16 else np.uint16)

    atomic_array(path, compact)
    return np.load(path)


#: Child-seed purposes of the controls' draws (1 and 2 are the data order and dropout, :mod:`trajectory.arms.training`).
RANDOM_PURPOSE, SHUFFLE_PURPOSE = 4, 5
CONTROLS = ("random", "shuffled")


def seeded(source: str) -> bool:
    """Whether ``source``'s tokens depend on the twin seed (a control), so each seed has its own."""
    return source == "random" or source.startswith("shuffled:")


def control_windows(source: str, base: TrainTokens | None, n_tokens: int, seq_len: int, seed: int, vocab: int):
    """(n, seq_len) int64 windows of a control (module docstring): ``random`` draws ``n = n_tokens // seq_len``
    windows uniform over ``vocab`` ids; ``shuffled:SOURCE`` permutes all tokens of ``base``'s windows at once."""
    if source == "random":
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), RANDOM_PURPOSE]))
        return rng.integers(0, vocab, size=(max(2, n_tokens // seq_len), seq_len), dtype=np.int64)
    if base.windows is not None:
        flat = base.windows.reshape(-1).astype(np.int64)
    else:
        rows = np.arange(min(base.n_windows, max(2, n_tokens // seq_len)))
        flat = base.shard.rows(rows, seq_len).reshape(-1).astype(np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SHUFFLE_PURPOSE]))
    return flat[rng.permutation(flat.shape[0])].reshape(-1, seq_len)


def train_tokens(
    source: str,
    tokenizer,
    n_tokens: int,
    seq_len: int,
    cache: Path | None = None,
    seed: int = 0,
    vocab: int | None = None,
) -> TrainTokens:
    """The windows a twin trains on: up to ``n_tokens`` tokens of ``source`` (fewer if it is shorter); a control
    (``random``, ``shuffled:SOURCE``) is drawn from ``seed`` over ``vocab`` ids (default: the tokenizer's)."""
    from .corpus import cache_dir
    from .tokens import window_hash

    if seeded(source):
        inner = source.partition(":")[2]
        if source.startswith("shuffled:") and (not inner or seeded(inner)):
            raise ConfigError(f"[twin] train_data {source!r}: give shuffled:SOURCE with SOURCE a text source")
        base = None if source == "random" else train_tokens(inner, tokenizer, n_tokens, seq_len, cache)
        windows = control_windows(source, base, n_tokens, seq_len, seed, vocab or len(tokenizer))
        return TrainTokens(source, window_hash(windows), seq_len, windows=windows)
    kind = source.partition(":")[0]
    if kind == "shards":
        from .shards import IndexedShard

        shard = IndexedShard(source.partition(":")[2])
        return TrainTokens(source, shard.fingerprint(), seq_len, shard=shard)
    if kind == "hub-shards":  # exactly the rows the run trains on: rows 0 … n_tokens // seq_len − 1
        from .hubshards import HubRows

        rows = HubRows(source.partition(":")[2], max(1, n_tokens // seq_len), cache or cache_dir())
        return TrainTokens(source, rows.data_hash, seq_len, shard=rows)
    if kind not in ("embedded", "text"):
        raise ConfigError(
            "[twin] train_data must be 'embedded', 'text:PATH', 'shards:PREFIX', "
            f"'hub-shards:REPO[@COMMIT]', 'random' or 'shuffled:SOURCE', got {source!r}"
        )
    ids = _cached_stream(source, tokenizer, n_tokens, cache or cache_dir())
    n = ids.shape[0] // seq_len
    if n < 2:
        raise DataError(
            f"twin training text {source} has {ids.shape[0]} tokens, fewer than two windows of "
            f"{seq_len}; give more text"
        )
    windows = ids[: n * seq_len].reshape(n, seq_len)
    return TrainTokens(source, window_hash(windows), seq_len, windows=windows)
