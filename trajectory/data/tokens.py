"""Evaluation tokens: text from a file, a parquet column or a Hub dataset, cut into windows.

Documents are tokenized with the model's own tokenizer, joined with its EOS
token, and the stream is cut into ``n_tokens // seq_len`` consecutive windows of
``seq_len`` tokens.  The windows are content-hashed (sha256 of the int64 ids
and the window length) and that hash travels with every result, so a changed
text, tokenizer or window length can never reuse a cached number.

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
from ..config import DataSpec
from ..errors import ConfigError, DataError, HubUnreachableError, TrajectoryError

#: The least a working tokenizer gives: one token per this many characters of text (measured here: the embedded
#: corpus's 4,096-id BPE gives one per 3.2 characters of its eval part, the tests' 320-id BPE one per 1.6 of
#: stdlib code; an empty tokenizer none) …
MAX_CHARS_PER_TOKEN = 50
#: … and, over at least :data:`MIN_TOKENS_TO_JUDGE` text tokens, this many distinct ids (a tokenizer that maps
#: every word to one unknown id gives 1; the tests' 320-id BPE gives 39 in the first 64 tokens of stdlib code).
MIN_DISTINCT_IDS = 16
MIN_TOKENS_TO_JUDGE = 64


@dataclass(frozen=True)
class EvalTokens:
    """Token windows (n_seq, seq_len) and their content hash."""

    ids: np.ndarray
    data_hash: str
    source: str

    @property
    def n_tokens(self) -> int:
        return int(self.ids.size)


def _dataset_file(spec: str) -> Path:
    """The local copy of ``REPO:PATH`` (downloaded into the HF cache, or found there offline)."""
    from huggingface_hub import errors as hf
    from huggingface_hub import hf_hub_download

    repo, sep, path = spec.partition(":")
    if not sep or not repo or not path:
        raise ConfigError(f"--dataset must be REPO:PATH (a parquet file in a Hub dataset), got {spec!r}")
    names.repo_id(repo, "--dataset repo")
    names.relative_name(path, "--dataset file")
    try:
        return Path(hf_hub_download(repo, path, repo_type="dataset"))
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


def window_hash(ids: np.ndarray) -> str:
    """sha256 of the windows' int64 ids and their shape, 16 hex digits."""
    h = hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").tobytes())
    h.update(repr(ids.shape).encode())
    return h.hexdigest()[:16]


def split_documents(text: str) -> list[str]:
    """A text's documents: blocks separated by blank lines, empty ones dropped."""
    return [doc for doc in text.split("\n\n") if doc.strip()]


def windows(documents, tokenizer, n_tokens: int, seq_len: int, describe: str = "text") -> EvalTokens:
    """The first ``n_tokens // seq_len`` windows of ``seq_len`` tokens of the documents, joined by EOS."""
    if seq_len < 2 or n_tokens < seq_len:
        raise ConfigError(f"need tokens ≥ seq-len ≥ 2, got tokens={n_tokens}, seq-len={seq_len}")
    n_seq = n_tokens // seq_len
    need = n_seq * seq_len
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    n_chars = n_text = 0
    for doc in documents:
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
        stream.extend(ids)
        n_chars, n_text = n_chars + len(doc), n_text + len(ids)
        if eos is not None:
            stream.append(eos)
        if len(stream) >= need:
            break
    check_tokenizer_output(n_chars, n_text, stream, eos, describe)
    if len(stream) < need:
        raise DataError(
            f"evaluation text {describe} has {len(stream)} tokens, fewer than the "
            f"{need} asked for; lower --tokens or give more text"
        )
    return from_ids(np.asarray(stream[:need], dtype=np.int64), seq_len, describe)


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
    return windows(iter_documents(source), tokenizer, source.tokens, source.seq_len, source.describe())
