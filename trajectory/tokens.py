"""Evaluation tokens: text from a file, a parquet column or a Hub dataset, cut into windows.

Documents are tokenized with the model's own tokenizer, joined with its EOS
token, and the stream is cut into ``n_tokens // seq_len`` consecutive windows of
``seq_len`` tokens.  The windows are content-hashed (sha256 of the int64 ids
and the window length) and that hash travels with every result, so a changed
text, tokenizer or window length can never reuse a cached number.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import TrajectoryError


@dataclass(frozen=True)
class TextSource:
    """Where evaluation text comes from: exactly one of the three kinds.

    ``kind`` is ``"text"`` (a UTF-8 file, one document per blank-line-separated
    paragraph block), ``"parquet"`` (a local parquet file's ``column``) or
    ``"dataset"`` (``REPO:PATH``, a parquet file of a Hub dataset repo) or
    ``"embedded"`` (``path`` names a corpus shipped with every machine; see
    :mod:`trajectory.corpus`; its evaluation part is disjoint from its training part).
    """

    kind: str
    path: str
    column: str = "text"

    def describe(self) -> str:
        return f"{self.kind}:{self.path}" + (f"[{self.column}]" if self.kind != "text" else "")


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
        raise TrajectoryError(f"--dataset must be REPO:PATH (a parquet file in a Hub dataset), got {spec!r}")
    return Path(hf_hub_download(repo, path, repo_type="dataset"))


def iter_documents(source: TextSource) -> Iterator[str]:
    """Yield the source's documents in a fixed order."""
    if source.kind == "embedded":
        from .corpus import embedded_documents

        yield from embedded_documents(source.path, part="eval")
        return
    path = _dataset_file(source.path) if source.kind == "dataset" else Path(source.path)
    if not path.is_file():
        raise TrajectoryError(f"evaluation text file not found: {path}")
    if source.kind == "text":
        text = path.read_text(encoding="utf-8", errors="replace")
        yield from (doc for doc in text.split("\n\n") if doc.strip())
        return
    import polars as pl

    try:
        frame = pl.read_parquet(path, columns=[source.column])
    except Exception as exc:  # polars raises several types for a bad file or column
        raise TrajectoryError(f"cannot read column {source.column!r} of {path}: {exc}".splitlines()[0]) from None
    yield from (doc for doc in frame.get_column(source.column).drop_nulls() if doc.strip())


def window_hash(ids: np.ndarray) -> str:
    """sha256 of the windows' int64 ids and their shape, 16 hex digits."""
    h = hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").tobytes())
    h.update(repr(ids.shape).encode())
    return h.hexdigest()[:16]


def tokenize_windows(source: TextSource, tokenizer, n_tokens: int, seq_len: int) -> EvalTokens:
    """The first ``n_tokens // seq_len`` windows of the tokenized source."""
    if seq_len < 2 or n_tokens < seq_len:
        raise TrajectoryError(f"need tokens ≥ seq-len ≥ 2, got tokens={n_tokens}, seq-len={seq_len}")
    n_seq = n_tokens // seq_len
    need = n_seq * seq_len
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for doc in iter_documents(source):
        stream.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        if eos is not None:
            stream.append(eos)
        if len(stream) >= need:
            break
    if len(stream) < need:
        raise TrajectoryError(
            f"evaluation text {source.describe()} has {len(stream)} tokens, fewer than the "
            f"{need} asked for; lower --tokens or give more text"
        )
    ids = np.asarray(stream[:need], dtype=np.int64).reshape(n_seq, seq_len)
    return EvalTokens(ids=ids, data_hash=window_hash(ids), source=source.describe())


def eval_tokens(spec, tokenizer) -> EvalTokens:
    """The evaluation windows a manifest's ``[data]`` (a :class:`~trajectory.manifest.DataSpec`) asks for."""
    return tokenize_windows(TextSource(spec.kind, spec.path, spec.column), tokenizer, spec.tokens, spec.seq_len)
