"""The embedded corpus (disjoint train/eval parts), its locally trained tokenizer, and Pythia-format shards."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from trajectory.data import corpus
from trajectory.data.shards import MAGIC, IndexedShard
from trajectory.data.traindata import train_tokens
from trajectory.errors import TrajectoryError


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_parts_are_disjoint_deterministic_and_about_a_tenth():
    paths = corpus.document_paths("stdlib")
    assert not any("site-packages" in rel for rel, _ in paths)
    eval_docs = list(corpus.embedded_documents("stdlib", "eval"))
    assert eval_docs == list(corpus.embedded_documents("", "eval"))  # "" names the default corpus
    train_hashes = {_digest(d) for d in corpus.embedded_documents("stdlib", "train")}
    eval_hashes = {_digest(d) for d in eval_docs}
    assert len(eval_hashes) > 50 and len(train_hashes) > 500
    assert 0.05 < len(eval_hashes) / (len(eval_hashes) + len(train_hashes)) < 0.15
    assert not eval_hashes & train_hashes, "a document's text is in both parts"


def test_bad_corpus_or_part_is_one_line_error():
    with pytest.raises(TrajectoryError, match="unknown embedded corpus 'wiki'"):
        next(corpus.embedded_documents("wiki", "eval"))
    with pytest.raises(TrajectoryError, match="part must be one of"):
        next(corpus.embedded_documents("stdlib", "test"))
    with pytest.raises(TrajectoryError, match="embedded:VOCAB"):
        corpus.parse_tokenizer_spec("embedded:many")


def test_tokenizer_trained_once_cached_and_lossless(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAJECTORY_CACHE", str(tmp_path))
    corpus.cache_dir.cache_clear()
    try:
        from trajectory.sources.loading import load_tokenizer

        tok = load_tokenizer("embedded:512")  # the path a manifest's tokenizer = "embedded:512" takes
        assert len(tok) == 512 and tok.eos_token == corpus.EOS
        assert len(list((tmp_path / "tokenizers").iterdir())) == 1

        def refuse(*_a, **_k):
            raise AssertionError("retrained a cached tokenizer")

        monkeypatch.setattr(corpus, "_train_bpe", refuse)
        again = load_tokenizer("embedded:512")
        assert corpus.tokenizer_hash(again) == corpus.tokenizer_hash(tok)
        doc = next(corpus.embedded_documents("stdlib", "eval"))[:3000]
        ids = tok(doc, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == doc
        assert len(ids) < len(doc.encode()) / 2  # BPE merges compress code well below one token per byte
    finally:
        corpus.cache_dir.cache_clear()


def _write_shard(prefix, rows: list[np.ndarray], dtype=np.uint16, code=8) -> None:
    """A Megatron MMapIndexedDataset pair, written the way Pythia's shards are."""
    sizes = np.array([len(r) for r in rows], dtype=np.int32)
    pointers = np.concatenate([[0], np.cumsum(sizes[:-1]) * np.dtype(dtype).itemsize]).astype(np.int64)
    with open(f"{prefix}.idx", "wb") as fh:
        fh.write(MAGIC + struct.pack("<QBQQ", 1, code, len(rows), len(rows) + 1))
        fh.write(sizes.tobytes() + pointers.tobytes() + np.arange(len(rows) + 1, dtype=np.int64).tobytes())
    np.concatenate(rows).astype(dtype).tofile(f"{prefix}.bin")


def test_shards_rows_in_pythia_order(tmp_path):
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 50_000, 2049) for _ in range(7)]
    _write_shard(tmp_path / "pile", rows)
    shard = IndexedShard(tmp_path / "pile.bin")
    assert len(shard) == 7 and shard.dtype == np.uint16
    assert np.array_equal(shard.row(3), rows[3])
    stream = train_tokens(f"shards:{tmp_path / 'pile'}", None, 0, 2049)
    batch = stream.batch(step=1, per_batch=3, seed=123)  # rows 3, 4, 5: Pythia's order, never shuffled
    assert np.array_equal(batch, np.stack(rows[3:6]))
    assert np.array_equal(stream.batch(step=2, per_batch=3, seed=0)[1:], np.stack(rows[:2]))  # wraps round


def test_shard_errors_are_one_line(tmp_path):
    with pytest.raises(TrajectoryError, match="training shard not found"):
        IndexedShard(tmp_path / "missing")
    (tmp_path / "bad.idx").write_bytes(b"NOTANIDX" * 8)
    (tmp_path / "bad.bin").write_bytes(b"")
    with pytest.raises(TrajectoryError, match="bad magic"):
        IndexedShard(tmp_path / "bad")
    _write_shard(tmp_path / "short", [np.arange(10)])
    with pytest.raises(TrajectoryError, match="fewer than seq_len"):
        IndexedShard(tmp_path / "short").rows(np.array([0]), 2049)


def test_text_stream_batches_are_a_pure_function_of_seed_and_step(tmp_path, tokenizer, text_file):
    stream = train_tokens(f"text:{text_file}", tokenizer, 20_000, 32, cache=tmp_path)
    again = train_tokens(f"text:{text_file}", tokenizer, 20_000, 32, cache=tmp_path)
    assert stream.data_hash == again.data_hash and stream.windows.shape == (625, 32)
    a = stream.batch(step=40, per_batch=8, seed=1)  # crosses into epoch 1 at window 625
    assert np.array_equal(a, again.batch(step=40, per_batch=8, seed=1))
    assert not np.array_equal(a, stream.batch(step=40, per_batch=8, seed=2))
    epoch0 = np.concatenate([stream.batch(s, 25, seed=1) for s in range(25)])
    assert np.array_equal(np.sort(epoch0, axis=0), np.sort(stream.windows, axis=0))  # each window once per epoch
