"""The embedded corpus: real text on every machine, and a BPE tokenizer trained on it locally.

The corpus ``stdlib`` is the running CPython's own standard library: every
``.py``, ``.rst`` and ``.txt`` file under ``sysconfig``'s ``stdlib`` folder,
third-party ``site-packages`` excluded (they differ between machines).  One
file is one document; documents come in the sorted order of their relative
paths.  The split is by document and deterministic: a document belongs to
``eval`` when the first 8 hex digits of sha256(its text), read as an integer,
are ≡ 0 (mod 10), otherwise to ``train`` — about 10% held out.  Hashing the
text rather than the path puts identical files (the stdlib has copies) in
the same part, so no evaluation document also appears in training.

The tokenizer is a byte-level BPE (GPT-2/Pythia style pre-tokenisation, one
special token ``<|endoftext|>``) trained with the ``tokenizers`` library on
the first ``TOKENIZER_TEXT_CHARS`` characters of the *train* part, so the
evaluation part is never seen by the tokenizer either.  It is cached under
``<cache>/tokenizers/<hash>/`` where the hash covers the training text, the
vocabulary size and the ``tokenizers`` version: it is trained once per
machine, and a changed corpus can never reuse a stale tokenizer.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from ..atomic import atomic_dir
from ..config import DEFAULT_TOKENIZER
from ..errors import ConfigError, DataError

CORPORA = ("stdlib",)
PARTS = ("train", "eval")
SUFFIXES = (".py", ".rst", ".txt")
EXCLUDED_DIRS = {"site-packages", "dist-packages", "__pycache__"}
EVAL_MODULUS = 10
TOKENIZER_TEXT_CHARS = 4_000_000
EOS = "<|endoftext|>"


@functools.cache
def cache_dir() -> Path:
    """Where derived artefacts (tokenizers, token streams) live: ``$TRAJECTORY_CACHE`` or ``~/.cache/trajectory``.

    The environment is read once per process.
    """
    return Path(os.environ.get("TRAJECTORY_CACHE") or Path.home() / ".cache" / "trajectory")


def _check(name: str, part: str) -> None:
    if (name or "stdlib") not in CORPORA:
        raise ConfigError(f"unknown embedded corpus {name!r}; known: {', '.join(CORPORA)}")
    if part not in PARTS:
        raise ConfigError(f"embedded corpus part must be one of {PARTS}, got {part!r}")


def part_of(text: str) -> str:
    """``eval`` or ``train``: a pure function of the document's text."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    return "eval" if int(digest[:8], 16) % EVAL_MODULUS == 0 else "train"


@functools.cache
def document_paths(name: str = "stdlib") -> tuple[tuple[str, Path], ...]:
    """(relative path, absolute path) of every document of the corpus, sorted by relative path."""
    _check(name, "train")
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.suffix in SUFFIXES and not EXCLUDED_DIRS.intersection(rel.parts) and path.is_file():
            found.append((rel.as_posix(), path))
    if not found:
        raise DataError(f"embedded corpus {name!r}: no .py/.rst/.txt files under {root}")
    return tuple(sorted(found))


def embedded_documents(name: str, part: str) -> Iterator[str]:
    """Yield the non-empty documents of one part of an embedded corpus, in a fixed order."""
    _check(name, part)
    for _, path in document_paths(name or "stdlib"):
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip() and part_of(text) == part:
            yield text


def _training_text(name: str, n_chars: int) -> str:
    parts, size = [], 0
    for doc in embedded_documents(name, "train"):
        parts.append(doc)
        size += len(doc)
        if size >= n_chars:
            break
    return "\n".join(parts)[:n_chars]


def parse_tokenizer_spec(spec: str) -> int:
    """The vocabulary size of ``embedded:VOCAB`` (``embedded`` alone: 4096)."""
    head, _, vocab = spec.partition(":")
    if head != "embedded" or (vocab and not vocab.isdigit()) or (vocab and int(vocab) < 300):
        raise ConfigError(f"tokenizer {spec!r}: expected 'embedded:VOCAB' with VOCAB ≥ 300, e.g. {DEFAULT_TOKENIZER!r}")
    return int(vocab) if vocab else 4096


def _train_bpe(text: str, vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[EOS],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    # Chunks of ~1 MB let the trainer count words in parallel.
    chunk = 1 << 20
    tok.train_from_iterator((text[i : i + chunk] for i in range(0, len(text), chunk)), trainer)
    return tok


def embedded_tokenizer(spec: str = DEFAULT_TOKENIZER, corpus: str = "stdlib", root: Path | None = None):
    """A ``PreTrainedTokenizerFast`` BPE trained on the corpus's train part, trained once and cached."""
    import tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = parse_tokenizer_spec(spec)
    text = _training_text(corpus, TOKENIZER_TEXT_CHARS)
    key = hashlib.sha256(f"{vocab}|{tokenizers.__version__}|".encode() + text.encode()).hexdigest()[:16]
    folder = (root or cache_dir()) / "tokenizers" / f"{corpus}-{vocab}-{key}"
    if not (folder / "tokenizer.json").is_file():  # another process may finish the same tokenizer first: kept
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=_train_bpe(text, vocab), eos_token=EOS)
        atomic_dir(folder, tokenizer.save_pretrained, replace=folder.exists())  # a damaged folder is replaced
    return PreTrainedTokenizerFast.from_pretrained(folder)


def tokenizer_hash(tokenizer) -> str:
    """16 hex digits of the tokenizer's serialised vocabulary and merges."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]
