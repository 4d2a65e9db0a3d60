"""Evaluation windows drawn from many documents, seeded, split by document; random-init draws disjoint from
every twin's init (issue 22, point 6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from builders import tiny_config, tiny_tokenizer

from trajectory.arms import random_init
from trajectory.config import MetricConfig
from trajectory.data.tokens import eval_tokens, windows
from trajectory.engine.measure import split_by_document
from trajectory.engine.models import fresh_model, weights_hash
from trajectory.errors import ConfigError
from trajectory.manifest import load_manifest
from trajectory.verdicts import shared_inits

DEMO = Path(__file__).resolve().parents[1] / "manifests" / "demo.toml"
SPAN = 10_000  # token ids of document i lie in [1 + i·SPAN, 1 + (i + 1)·SPAN)


class DocTokenizer:
    """Maps word j of a document ``"d<i> <n>"`` … to id 1 + i·SPAN + j: every id names its document."""

    eos_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        head, n = text.split()[:2]
        i = int(head[1:])
        return {"input_ids": [1 + i * SPAN + j % (SPAN - 1) for j in range(int(n))]}


def _docs(lengths) -> list[str]:
    return [f"d{i} {n} " + "x " * 10 for i, n in enumerate(lengths)]


def _doc_of(ids: np.ndarray) -> set[int]:
    return {int(v - 1) // SPAN for v in np.unique(ids) if v != 0}


def test_one_long_document_does_not_fill_the_windows():
    """The first document (50,000 tokens) alone could fill all 128 windows, as the first tokens in path order
    did; drawn from many documents, none holds more than 10% and at least 20 give windows."""
    docs = _docs([50_000] + [700] * 60)
    got = windows(docs, DocTokenizer(), 16_384, 128, seed=0)
    per_window = [_doc_of(w) for w in got.ids]
    assert all(len(d) == 1 for d in per_window)  # no window spans two documents of ≥ 1 window
    counts = np.unique([d.pop() for d in per_window], return_counts=True)[1]
    assert counts.size >= 20 and counts.max() / got.ids.shape[0] <= 0.10
    assert got.n_documents == counts.size and got.max_doc_share == pytest.approx(counts.max() / 128, abs=1e-12)


def test_windows_are_seeded():
    docs = _docs([900] * 80)
    a, b, c = (windows(docs, DocTokenizer(), 4096, 64, seed=s) for s in (3, 3, 4))
    assert a.data_hash == b.data_hash and np.array_equal(a.ids, b.ids)
    assert a.data_hash != c.data_hash and _doc_of(a.ids) != _doc_of(c.ids)


def test_short_documents_are_joined_and_a_small_corpus_still_fills_the_windows():
    """Documents shorter than a window are joined into one; when every document has given its share and
    windows are missing, documents give more (the largest share then exceeds the cap, and says so)."""
    short = windows(_docs([20] * 400), DocTokenizer(), 2048, 64)
    assert short.ids.shape == (32, 64) and short.n_documents == 32
    few = windows(_docs([3000] * 3), DocTokenizer(), 4096, 64)
    assert few.ids.shape == (64, 64) and few.n_documents == 3 and few.max_doc_share > 0.3


@pytest.mark.parametrize("split", ["random", "tail"])
def test_held_out_windows_share_no_document_with_train_windows(split):
    docs = _docs([700] * 60 + [5000] * 5)
    tokens = windows(docs, DocTokenizer(), 8192, 64, seed=1)
    is_test = split_by_document(tokens, MetricConfig(heldout_frac=0.2, seed=2, split=split))
    held, train = _doc_of(tokens.ids[is_test]), _doc_of(tokens.ids[~is_test])
    assert held and train and not held & train
    assert 0.2 <= is_test.mean() <= 0.2 + tokens.max_doc_share + 1e-12  # whole documents, at most one more


def test_demo_evaluation_comes_from_many_documents():
    """The acceptance of ``make sweep``: the demo's windows come from ≥ 20 documents of the embedded corpus's
    eval part, none holding more than 10% of the tokens (with the tests' small BPE: the cap is in windows)."""
    data = load_manifest(DEMO).data
    tokens = eval_tokens(data, tiny_tokenizer())
    assert tokens.n_tokens == data.tokens
    assert tokens.n_documents >= 20 and tokens.max_doc_share <= 0.10


def test_demo_band_draws_are_not_any_twin_init():
    """No random-init draw of the demo has the weights of a twin's step 0 (a twin of seed s starts from
    ``fresh_model(config, s)``); with 5 draws, draws 0 and 1 were the twins' own inits."""
    m = load_manifest(DEMO)
    assert len(m.random_init_seeds) >= 20
    cfg = tiny_config("gpt_neox")
    twins = {weights_hash(fresh_model(cfg, s, with_head=True)) for s in m.twin.seeds}
    band = {weights_hash(fresh_model(cfg, random_init.band_seed(s))) for s in m.random_init_seeds}
    assert len(band) == len(m.random_init_seeds) and not band & twins
    random_init.check_disjoint(m.random_init_seeds, m.twin.seeds)


def test_a_twin_seed_equal_to_a_band_draw_is_refused():
    with pytest.raises(ConfigError, match="random-init seed 3 draws the same weights as twin seed"):
        random_init.check_disjoint((0, 3), (1, random_init.band_seed(3)))


def test_a_band_row_with_a_twin_init_weights_is_flagged():
    frame = pl.DataFrame(
        {
            "arm": ["random-init", "random-init", "twin", "twin"],
            "seed": [0, 1, 0, 0],
            "step": [0, 0, 0, 8],
            "weights_hash": ["aa", "bb", "bb", "cc"],
        }
    )
    (flag,) = shared_inits(frame)
    assert "random-init seed 1" in flag and "twin seed 0" in flag
    assert shared_inits(frame.filter(pl.col("seed") == 0, pl.col("arm") == "random-init")) == []
