"""Evaluation tokens: text from a file, a parquet column or a Hub dataset, cut into windows.

Documents are tokenized with the model's own tokenizer, joined with its EOS
token, and the stream is cut into ``n_tokens // seq_len`` consecutive windows of
``seq_len`` tokens.  The windows are content-hashed (sha256 of the int64 ids
and the window length) and that hash travels with every result, so a changed
text, tokenizer or window length can never reuse a cached number.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DataSpec
from ..errors import ConfigError, DataError


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
    from huggingface_hub import hf_hub_download

    repo, sep, path = spec.partition(":")
    if not sep or not repo or not path:
        raise ConfigError(f"--dataset must be REPO:PATH (a parquet file in a Hub dataset), got {spec!r}")
    return Path(hf_hub_download(repo, path, repo_type="dataset"))


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
    yield from (doc for doc in frame.get_column(source.column).drop_nulls() if doc.strip())


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
    for doc in documents:
        stream.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        if eos is not None:
            stream.append(eos)
        if len(stream) >= need:
            break
    if len(stream) < need:
        raise DataError(
            f"evaluation text {describe} has {len(stream)} tokens, fewer than the "
            f"{need} asked for; lower --tokens or give more text"
        )
    return from_ids(np.asarray(stream[:need], dtype=np.int64), seq_len, describe)


def from_ids(ids, seq_len: int, describe: str = "token ids") -> EvalTokens:
    """Windows from token ids: a (n_seq, seq_len) array as it is, or a 1-D stream cut into whole windows."""
    ids = np.asarray(ids)
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
