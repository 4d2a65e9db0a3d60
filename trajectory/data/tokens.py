"""Evaluation tokens: text from a file, a parquet column or a Hub dataset, cut into windows.

Documents are tokenized with the model's own tokenizer, each followed by its EOS token.  The windows are
drawn from many documents (:func:`windows`): the documents are taken in a seeded order, each is cut into
whole windows of ``seq_len`` tokens, and each gives at most ``max(1, ⌊max_doc_share · n_seq⌋)`` windows (a
contiguous run at a seeded offset) until ``n_seq = n_tokens // seq_len`` windows are found; only if every
document has been used and windows are still missing do documents give more.  A window never spans two
documents, except that a document shorter than one window is joined with the ones after it (in the seeded
order) until the run fills a window: such a run counts as one document.  Every window carries the index
of its document (:attr:`EvalTokens.doc`), so the held-out split is by document
(:func:`trajectory.engine.measure.split_by_document`): no held-out window holds a token of a train document.

A document is one file of the embedded corpus, one row of a parquet column, or, for a text file, one
block of text between blank lines.

The windows are content-hashed (sha256 of the int64 ids, the window length and each window's document)
and that hash travels with every result, so a changed text, tokenizer, order or window length can never
reuse a cached number.

A tokenizer that maps the text to almost nothing is refused (:func:`check_tokenizer_output`): a model
folder without tokenizer files gives transformers an empty tokenizer, and every window would be EOS.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import names
from ..config import DEFAULT_MAX_DOC_SHARE, DataSpec
from ..errors import ConfigError, DataError, HubUnreachableError, TrajectoryError

#: The least a working tokenizer gives: one token per this many characters of text (measured here: the embedded
#: corpus's 4,096-id BPE gives one per 3.2 characters of its eval part, the tests' 320-id BPE one per 1.6 of
#: stdlib code; an empty tokenizer none) …
MAX_CHARS_PER_TOKEN = 50
#: … and, over at least :data:`MIN_TOKENS_TO_JUDGE` text tokens, this many distinct ids (a tokenizer that maps
#: every word to one unknown id gives 1; the tests' 320-id BPE gives 39 in the first 64 tokens of stdlib code).
MIN_DISTINCT_IDS = 16
#: Text tokens below which a tokenizer's distinct ids are not judged.
MIN_TOKENS_TO_JUDGE = 64


@dataclass(frozen=True)
class EvalTokens:
    """Token windows (n_seq, seq_len), their content hash, and each window's document (``doc``, (n_seq,)
    int64; ``None`` for bare token ids, where each window counts as its own document)."""

    ids: np.ndarray
    data_hash: str
    source: str
    doc: np.ndarray | None = None

    @property
    def n_tokens(self) -> int:
        return int(self.ids.size)

    def documents(self) -> np.ndarray:
        """(n_seq,) the document index of every window (each window its own when none was recorded)."""
        return np.arange(self.ids.shape[0]) if self.doc is None else self.doc

    @property
    def n_documents(self) -> int:
        return int(np.unique(self.documents()).size)

    @property
    def max_doc_share(self) -> float:
        """The largest share of the windows (so of the tokens) that one document holds."""
        return float(np.unique(self.documents(), return_counts=True)[1].max() / self.ids.shape[0])


def _dataset_file(spec: str) -> Path:
    """The local copy of ``REPO:PATH`` (downloaded into the HF cache, or found there offline)."""
    from huggingface_hub import errors as hf
    from huggingface_hub import hf_hub_download

    from ..online import hub_offline

    repo, sep, path = spec.partition(":")
    if not sep or not repo or not path:
        raise ConfigError(f"--dataset must be REPO:PATH (a parquet file in a Hub dataset), got {spec!r}")
    names.repo_id(repo, "--dataset repo")
    names.relative_name(path, "--dataset file")
    try:
        return Path(hf_hub_download(repo, path, repo_type="dataset", local_files_only=hub_offline()))
    except (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled):
        raise HubUnreachableError(
            f"dataset file {spec} is not in the local cache and the Hub cannot be reached (HF_HUB_OFFLINE=1 or no "
            "network); run once online to cache it, or give the text as --parquet/--text-file"
        ) from None
    except (hf.RepositoryNotFoundError, hf.EntryNotFoundError, hf.RevisionNotFoundError) as exc:
        raise DataError(f"dataset file {spec} does not exist on the Hub ({type(exc).__name__})") from None
    except (OSError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise TrajectoryError(f"cannot fetch dataset file {spec}: {first}") from None


def iter_documents(source: DataSpec) -> Iterator[str]:
    """Yield the source's documents in a fixed order."""
    if source.kind == "embedded":
        from .corpus import embedded_documents

        yield from embedded_documents(source.path, part="eval")
        return
    path = _dataset_file(source.path) if source.kind == "dataset" else Path(source.path)
    if not path.is_file():
        raise DataError(f"evaluation text file not found: {path}")
    if source.kind == "text":
        yield from split_documents(path.read_text(encoding="utf-8", errors="replace"))
        return
    import polars as pl

    try:
        frame = pl.read_parquet(path, columns=[source.column])
    except Exception as exc:  # polars raises several types for a bad file or column
        raise DataError(f"cannot read column {source.column!r} of {path}: {exc}".splitlines()[0]) from None
    column = frame.get_column(source.column)
    if column.dtype not in (pl.String, pl.Categorical):
        raise DataError(f"column {source.column!r} of {path} holds {column.dtype}, not text; give a text column")
    yield from (doc for doc in column.cast(pl.String).drop_nulls() if doc.strip())


def window_hash(ids: np.ndarray, doc: np.ndarray | None = None) -> str:
    """sha256 of the windows' int64 ids, their shape and (when recorded) each window's document, 16 hex
    digits: the split is by document, so the documents decide a number as much as the ids do."""
    h = hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").tobytes())
    h.update(repr(ids.shape).encode())
    if doc is not None:
        h.update(b"doc|" + np.ascontiguousarray(doc, dtype="<i8").tobytes())
    return h.hexdigest()[:16]


def split_documents(text: str) -> list[str]:
    """A text's documents: blocks separated by blank lines, empty ones dropped."""
    return [doc for doc in text.split("\n\n") if doc.strip()]


def _segments(documents: list[str], tokenizer, seq_len: int, rng: np.random.Generator, tally: list[int]):
    """Yield each document's whole windows ((n_w, seq_len) int64), documents in the order of ``rng``'s
    permutation; a document shorter than one window is joined with the next until the run fills one.
    ``tally`` accumulates (characters, text tokens) for :func:`check_tokenizer_output`."""
    eos = tokenizer.eos_token_id
    pending: list[int] = []
    for i in rng.permutation(len(documents)):
        ids = tokenizer(documents[i], add_special_tokens=False)["input_ids"]
        tally[0], tally[1] = tally[0] + len(documents[i]), tally[1] + len(ids)
        pending.extend(ids)
        if eos is not None:
            pending.append(eos)
        n_w = len(pending) // seq_len
        if n_w:
            yield np.asarray(pending[: n_w * seq_len], dtype=np.int64).reshape(n_w, seq_len)
            pending = []


def _take(runs: list[np.ndarray], counts: list[int], need: int) -> None:
    """Raise ``counts`` (windows taken per document, round after round) until they sum to ``need`` or every
    window is taken."""
    while sum(counts) < need and any(c < len(r) for c, r in zip(counts, runs, strict=True)):
        for k, run in enumerate(runs):
            if counts[k] < len(run) and sum(counts) < need:
                counts[k] += 1


def windows(
    documents,
    tokenizer,
    n_tokens: int,
    seq_len: int,
    describe: str = "text",
    seed: int = 0,
    max_doc_share: float = DEFAULT_MAX_DOC_SHARE,
) -> EvalTokens:
    """``n_tokens // seq_len`` windows of ``seq_len`` tokens drawn from many documents (module docstring):
    seeded order, at most ``max(1, ⌊max_doc_share · n_seq⌋)`` windows per document while unused documents
    remain, a seeded contiguous run within each."""
    if seq_len < 2 or n_tokens < seq_len:
        raise ConfigError(f"need tokens ≥ seq-len ≥ 2, got tokens={n_tokens}, seq-len={seq_len}")
    n_seq = n_tokens // seq_len
    cap = max(1, int(max_doc_share * n_seq))
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    docs, tally = list(documents), [0, 0]
    runs: list[np.ndarray] = []
    for run in _segments(docs, tokenizer, seq_len, rng, tally):
        runs.append(np.roll(run, -int(rng.integers(len(run))), axis=0))  # a seeded start, wrapping around
        if sum(min(cap, len(r)) for r in runs) >= n_seq:
            break
    counts = [min(cap, len(r)) for r in runs]
    _take(runs, counts, n_seq)
    flat = [run[:c] for run, c in zip(runs, counts, strict=True)]
    stream = np.concatenate(flat).reshape(-1).tolist() if flat else []
    check_tokenizer_output(tally[0], tally[1], stream, tokenizer.eos_token_id, describe)
    if sum(counts) < n_seq:
        raise DataError(
            f"evaluation text {describe} has {sum(counts) * seq_len} tokens in whole windows of {seq_len}, fewer "
            f"than the {n_seq * seq_len} asked for; lower --tokens or give more text"
        )
    ids = np.concatenate(flat)[:n_seq]
    doc = np.repeat(np.arange(len(counts)), counts)[:n_seq]
    return EvalTokens(ids=ids, data_hash=window_hash(ids, doc), source=describe, doc=doc)


def check_tokenizer_output(n_chars: int, n_text: int, stream: list[int], eos: int | None, describe: str) -> None:
    """Refuse a tokenizer that maps the text to almost nothing: fewer than one token per
    :data:`MAX_CHARS_PER_TOKEN` characters, or — over at least :data:`MIN_TOKENS_TO_JUDGE` text tokens — fewer
    than :data:`MIN_DISTINCT_IDS` distinct ids.  (``n_text`` counts the text's own tokens, not the EOS put
    between documents; an empty tokenizer gives none, and every window would be EOS.)"""
    hint = "the tokenizer does not fit this text; does the model folder have its tokenizer files (tokenizer.json …)?"
    if n_chars and n_text * MAX_CHARS_PER_TOKEN < n_chars:
        raise DataError(
            f"the tokenizer maps {n_chars} characters of {describe} to {n_text} tokens (fewer than 1 per "
            f"{MAX_CHARS_PER_TOKEN}): {hint}"
        )
    if n_text >= MIN_TOKENS_TO_JUDGE:
        distinct = len(set(stream) - {eos})
        if distinct < MIN_DISTINCT_IDS:
            raise DataError(
                f"the tokenizer maps {n_text} tokens of {describe} to only {distinct} distinct ids (fewer than "
                f"{MIN_DISTINCT_IDS}): {hint}"
            )


def from_ids(ids, seq_len: int, describe: str = "token ids") -> EvalTokens:
    """Windows from token ids: a (n_seq, seq_len) array as it is, or a 1-D stream cut into whole windows."""
    try:
        ids = np.asarray(ids)
    except ValueError:  # lists of unequal lengths
        raise DataError("tokens must be one stream of ids or windows of one length; rows differ") from None
    if ids.size == 0:
        raise DataError("token ids are empty; give at least one window of ≥ 2 tokens")
    if not np.issubdtype(ids.dtype, np.integer):
        raise DataError(f"token ids must be integers, got dtype {ids.dtype}")
    if ids.ndim == 1:
        n_seq = ids.shape[0] // seq_len
        ids = ids[: n_seq * seq_len].reshape(n_seq, seq_len)
    if ids.ndim != 2 or ids.shape[0] < 1 or ids.shape[1] < 2:
        raise DataError(f"token ids must form at least one window of ≥ 2 tokens, got shape {ids.shape}")
    ids = ids.astype(np.int64)
    return EvalTokens(ids=ids, data_hash=window_hash(ids), source=describe)


def eval_tokens(source: DataSpec, tokenizer) -> EvalTokens:
    """The windows a :class:`~trajectory.config.DataSpec` asks for, tokenized with ``tokenizer``."""
    return windows(
        iter_documents(source),
        tokenizer,
        source.tokens,
        source.seq_len,
        source.describe(),
        seed=source.seed,
        max_doc_share=source.max_doc_share,
    )
