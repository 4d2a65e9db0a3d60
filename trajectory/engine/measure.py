"""R²_lin of every block of one model: split, probe, fit, score.

The split is by document (:func:`split_by_document`): whole documents go to the held-out set, in a seeded
order (``split="random"``) or the last ones (``split="tail"``, the paper's protocol), until they hold
``round(heldout_frac · n_seq)`` windows, so no held-out window shares a document with a train window.
Bare token ids carry no documents; there each window is its own (:func:`split_by_sequence`).  The affine
map is fitted on train rows only and scored on held-out rows only.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch

from ..config import MetricConfig
from ..data.tokens import EvalTokens
from ..errors import ConfigError, DataError
from .adapters import adapter_for
from .companions import effective_rank, kfold_interval, linearity_scores, merged
from .heldout import FitThenScore, MomentsThenScore
from .probe import FFNProbe, moments
from .stats import BlockResult, BlockStats
from .tokentail import KEYS as TOKEN_TAIL_KEYS
from .tokentail import TailSpec

#: Companions that need the FFN's held-out moments, not just its held-out residuals.
NEEDS_HELDOUT_MOMENTS = ("effective_rank", "ci", "lowrank")
#: Companions scored by the held-out next-token loss: a causal LM's only (and they need its head).
LOSS_COMPANIONS = ("swap", "remove", "lowrank")
#: The keys each companion adds to a block's row; every requested key is present in every row, ``None``
#: where the metric is undefined, with the reason in ``status_<companion>`` (``ok`` where it is defined).
COMPANION_KEYS = {
    "linearity_score": (
        "linearity_score",
        "linearity_score_heldout",
        "linearity_score_nores",
        "linearity_score_nores_heldout",
    ),
    "effective_rank": ("effective_rank",),
    "ci": ("r2_lin_cv", "r2_lin_cv_low", "r2_lin_cv_high"),
    "swap": ("swap_loss", "swap_dloss", "swap_dppl"),
    "remove": ("remove_loss", "remove_dloss"),
    "lowrank": ("lowrank_rank", "lowrank_dloss"),
    "token_tail": TOKEN_TAIL_KEYS,
}


def split_by_sequence(n_seq: int, cfg: MetricConfig) -> np.ndarray:
    """Boolean (n_seq,): True for held-out windows; at least one window on each side."""
    if n_seq < 2:
        raise DataError(f"need at least 2 windows to split train from held-out, got {n_seq}")
    n_test = min(max(1, round(n_seq * cfg.heldout_frac)), n_seq - 1)
    is_test = np.zeros(n_seq, dtype=bool)
    if cfg.split == "tail":
        is_test[n_seq - n_test :] = True
    else:
        is_test[np.random.default_rng(cfg.seed).permutation(n_seq)[:n_test]] = True
    return is_test


def split_by_document(tokens: EvalTokens, cfg: MetricConfig) -> np.ndarray:
    """Boolean (n_seq,): True for held-out windows, whole documents at a time (module docstring).

    Documents are visited in a permutation seeded by ``cfg.seed`` (``tail``: from the last one back) and
    held out until their windows reach ``n_test = round(heldout_frac · n_seq)`` (clamped to [1, n_seq − 1]);
    at least one document stays on each side, so the held-out share can exceed ``heldout_frac`` by up to
    one document's windows."""
    if tokens.doc is None:
        return split_by_sequence(tokens.ids.shape[0], cfg)
    names, doc = np.unique(tokens.doc, return_inverse=True)
    if names.size < 2:
        raise DataError(f"need at least 2 documents to split train from held-out, got {names.size}")
    n_seq = doc.size
    n_test = min(max(1, round(n_seq * cfg.heldout_frac)), n_seq - 1)
    visit = (
        np.arange(names.size)[::-1] if cfg.split == "tail" else np.random.default_rng(cfg.seed).permutation(names.size)
    )
    counts = np.bincount(doc, minlength=names.size)
    held = np.cumsum(counts[visit]) < n_test
    chosen = visit[: min(int(held.sum()) + 1, names.size - 1)]
    return np.isin(doc, chosen)


def required_train_tokens(d_model: int) -> int:
    """The fit has d_model + 1 parameters per output; one more row makes it over-determined."""
    return d_model + 2


def check_budget(tokens: EvalTokens, is_test: np.ndarray, d_model: int) -> None:
    n_train = int((~is_test).sum()) * tokens.ids.shape[1]
    need = required_train_tokens(d_model)
    if n_train < need:
        total = math.ceil(need / (1.0 - is_test.mean()))
        raise DataError(
            f"{n_train} train tokens, but the affine fit needs at least {need} (d_model+2); "
            f"raise --tokens to about {total} or more"
        )


def check_positions(config, seq_len: int, allow_long: bool = False, what: str = "seq-len") -> None:
    """Windows must fit the positions the model was built for (``max_position_embeddings``; GPT-2's
    ``n_positions``).  Beyond them a model with learned absolute positions has no embedding (GPT-2 and BERT
    would crash), so that is refused; a rotary model runs, on positions it never trained on, so that is refused
    unless ``allow_long``."""
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or seq_len <= limit:
        return
    if not adapter_for(config.model_type).rotary:
        raise ConfigError(
            f"{what} {seq_len} is longer than the {limit} positions a {config.model_type} model has "
            f"embeddings for (max_position_embeddings); use {what} ≤ {limit}"
        )
    if not allow_long:
        raise ConfigError(
            f"{what} {seq_len} is longer than the model's {limit} positions (max_position_embeddings): its "
            f"rotary positions beyond {limit} were never trained; use {what} ≤ {limit}, or allow it with "
            "--allow-long (manifests: [data] allow_long = true)"
        )


def check_vocab(tokens: EvalTokens, vocab_size: int) -> None:
    """Every token id must name one of the model's ``vocab_size`` embeddings."""
    low, high = int(tokens.ids.min()), int(tokens.ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise DataError(
            f"token id {bad} of {tokens.source} is outside the model's {vocab_size} embeddings (vocab_size): "
            "the tokenizer does not belong to this model"
        )


def _finalize(block: int, stats: BlockResult, rcond: float, inf_gain: float | None = None) -> dict:
    """The block's row; ``inf_gain`` is what ``r2_lin_inf`` adds to ``r2_lin`` when ``stats`` are moments
    (:meth:`MomentsThenScore.inf_gain`; a one-pass :class:`FitThenScore` gives ``r2_lin_inf`` itself)."""
    if not stats.finite():
        nan = float("nan")
        return {
            "block": block,
            "r2_lin": nan,
            "r2_lin_global": nan,
            "r2_median_dim": nan,
            "n_train": stats.n_train,
            "n_test": stats.n_test,
            "cond": nan,
            "rank": 0,
            "status": "nonfinite activations",
            "r2_lin_inf": nan,
        }
    out = stats.finalize(rcond)
    if inf_gain is not None:
        out["r2_lin_inf"] = out["r2_lin"] + inf_gain
    row = {"block": block, **out, "status": "ok"}
    if not math.isfinite(row["r2_lin"]):  # 1 − SSE/SST with SST = 0: no number, and the status says why
        row["status"] = "undefined R²: the held-out FFN outputs are constant"
    return row


def needs_head(cfg: MetricConfig, model_type: str) -> bool:
    """Whether measuring with ``cfg`` needs the LM head loaded (a loss companion on a causal LM)."""
    return any(c in cfg.companions for c in LOSS_COMPANIONS) and adapter_for(model_type).causal


def groups_of(is_test: np.ndarray, cfg: MetricConfig) -> np.ndarray:
    """Probe group per window: ``is_test`` (0/1), or ``fold + folds·is_test`` when a k-fold interval is asked
    for (every train group before every held-out group, as :class:`~trajectory.engine.heldout.MomentsThenScore` needs).

    Folds are dealt round-robin over a permutation seeded by a child of ``cfg.seed``.
    """
    if "ci" not in cfg.companions:
        return is_test.astype(np.int64)
    n_seq = len(is_test)
    if n_seq < 2 * cfg.folds:
        raise DataError(f"a {cfg.folds}-fold interval needs at least {2 * cfg.folds} windows, got {n_seq}")
    child = np.random.SeedSequence(cfg.seed).spawn(1)[0]
    fold = np.empty(n_seq, dtype=np.int64)
    fold[np.random.default_rng(child).permutation(n_seq)] = np.arange(n_seq) % cfg.folds
    return fold + cfg.folds * is_test.astype(np.int64)


def n_train_groups(cfg: MetricConfig) -> int:
    """How many of :func:`groups_of`'s groups hold train windows (the first ones)."""
    return cfg.folds if "ci" in cfg.companions else 1


def _companion_values(i: int, probe: FFNProbe, stats: BlockResult, cfg: MetricConfig) -> dict:
    out = {}
    if "token_tail" in cfg.companions:
        out.update(probe.accumulators["ffn"][i].token_tail())
    if "effective_rank" in cfg.companions:
        out["effective_rank"] = effective_rank(stats.train, stats.test, rcond=cfg.rcond)
    if "ci" in cfg.companions:
        accs, k = probe.accumulators["ffn"][i].groups, cfg.folds
        out.update(kfold_interval([merged(accs[f], accs[k + f]) for f in range(k)], cfg.rcond))
    if "linearity_score" in cfg.companions:
        res = probe.accumulators["residual"][i].groups
        k = n_train_groups(cfg)
        out.update(linearity_scores(merged(*res[:k]), merged(*res[k:]), cfg.rcond))
    return out


def _swap(
    model,
    adapter,
    stats: list[BlockResult],
    rows: list[dict],
    heldout: np.ndarray,
    batch: int,
    device: str,
    rcond: float,
) -> None:
    from .swap import swap_losses

    if not adapter.causal:
        return  # an encoder has no next-token loss to compare
    if model.get_output_embeddings() is None:
        raise ConfigError("the 'swap' metric needs the LM head: load the model with its head (with_head=True)")
    ok = [r["status"] == "ok" for r in rows]
    fits = [s.affine_fit(rcond) if good else None for s, good in zip(stats, ok)]
    for row in swap_losses(model, adapter, fits, heldout, batch, device):
        if ok[row["block"]]:
            rows[row["block"]].update({k: v for k, v in row.items() if k != "block"})


def _ablations(model, adapter, stats, rows: list[dict], heldout: np.ndarray, batch: int, device: str, cfg) -> None:
    """The ``remove`` and ``lowrank`` companions (:mod:`trajectory.engine.replaced`)."""
    from .replaced import HeldoutCost, lowrank_ranks, remove_costs

    if model.get_output_embeddings() is None:
        raise ConfigError("the 'remove' and 'lowrank' metrics need the LM head: load the model with its head")
    cost = HeldoutCost(model, adapter, heldout, batch, device)
    ok = [r["status"] == "ok" for r in rows]
    extras = [{} for _ in rows]
    if "remove" in cfg.companions:
        extras = [{**e, **x} for e, x in zip(extras, remove_costs(model, adapter, ok, cost))]
    if "lowrank" in cfg.companions:
        trains = [s.train if good else None for s, good in zip(stats, ok)]
        extras = [
            {**e, **x} for e, x in zip(extras, lowrank_ranks(model, adapter, trains, cost, cfg.lowrank_tol, cfg.rcond))
        ]
    for row, extra in zip(rows, extras):
        row.update(extra)


def sinks_for(cfg: MetricConfig, n_groups: int, seq_len: int = 0) -> dict:
    """Per site, what collects each block's rows: one-pass fit-then-score unless a companion needs held-out
    moments (then per-group moments); the residual site, for the secretly-linear score, always keeps moments.
    With ``token_tail``, the FFN sink also keeps the token tail of windows of ``seq_len`` (:mod:`.tokentail`)."""
    tail = TailSpec(seq_len, cfg.seed) if "token_tail" in cfg.companions else None
    if any(c in cfg.companions for c in NEEDS_HELDOUT_MOMENTS):
        k, dtype = n_train_groups(cfg), cfg.compute_dtype
        sinks = {"ffn": lambda d_in, d_out: MomentsThenScore(d_in, d_out, n_groups, k, dtype, cfg.rcond, tail)}
    else:
        sinks = {"ffn": lambda d_in, d_out: FitThenScore(d_in, d_out, cfg.compute_dtype, cfg.rcond, tail)}
    if "linearity_score" in cfg.companions:
        sinks["residual"] = moments(n_groups, cfg.compute_dtype)
    return sinks


def _train_and_heldout(groups: list, n_train: int) -> BlockStats:
    """Groups (the first ``n_train`` train, the rest held out) folded into one train and one held-out accumulator."""
    if len(groups) == 2:
        return BlockStats(groups[0], groups[1])
    return BlockStats(merged(*groups[:n_train]), merged(*groups[n_train:]))


@contextmanager
def evaluating(model: torch.nn.Module):
    """Every module in eval mode (no dropout) inside; each module's own ``training`` flag restored after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def measure_blocks(model, tokens: EvalTokens, cfg: MetricConfig, device: str = "cpu", progress=None) -> list[dict]:
    """One flat dict per block: r2_lin, r2_lin_global, r2_median_dim, n_train, n_test, cond, rank, status,
    plus the companion metrics ``cfg.companions`` asks for.

    The model is measured in eval mode; every module's ``training`` flag is restored afterwards, so a
    caller in the middle of training keeps its dropout.
    """
    with evaluating(model):
        return _measure(model, tokens, cfg, device, progress)


def _measure(model, tokens: EvalTokens, cfg: MetricConfig, device: str, progress) -> list[dict]:
    adapter = adapter_for(model.config.model_type)
    check_vocab(tokens, model.get_input_embeddings().num_embeddings)
    check_positions(model.config, tokens.ids.shape[1], allow_long=True)  # the caller decides about rotary ones
    is_test = split_by_document(tokens, cfg)
    check_budget(tokens, is_test, model.config.hidden_size)
    groups = groups_of(is_test, cfg)
    probe = FFNProbe(model, adapter, sinks_for(cfg, 2 * n_train_groups(cfg), tokens.ids.shape[1]))
    batch = max(1, cfg.batch_tokens // tokens.ids.shape[1])
    probe.run(tokens.ids, groups, batch, device=device, progress=progress)
    stats, rows = [], []
    for i, sink in enumerate(probe.accumulators["ffn"]):
        if isinstance(sink, FitThenScore):
            s, gain = sink, None
        else:
            s, gain = _train_and_heldout(sink.groups, n_train_groups(cfg)), sink.inf_gain()
        row = _finalize(i, s, cfg.rcond, gain)
        if row["status"] == "ok":
            row.update(_companion_values(i, probe, s, cfg))
        stats.append(s)
        rows.append(row)
    if "swap" in cfg.companions:
        _swap(model, adapter, stats, rows, tokens.ids[is_test], batch, device, cfg.rcond)
    if {"remove", "lowrank"} & set(cfg.companions) and adapter.causal:
        _ablations(model, adapter, stats, rows, tokens.ids[is_test], batch, device, cfg)
    evaluation = evaluation_facts(tokens, is_test)
    return [{**with_every_companion_key(row, cfg, adapter.causal), **evaluation} for row in rows]


def evaluation_facts(tokens: EvalTokens, is_test: np.ndarray) -> dict:
    """What every row says about its evaluation windows: how many documents they come from, the largest
    share of the tokens one document holds, and how many documents are held out."""
    return {
        "eval_documents": tokens.n_documents,
        "eval_max_doc_share": tokens.max_doc_share,
        "heldout_documents": int(np.unique(tokens.documents()[is_test]).size),
    }


def with_every_companion_key(row: dict, cfg: MetricConfig, causal: bool) -> dict:
    """``row`` with every key of every requested companion: ``None`` where undefined, and ``status_<companion>``
    saying why (``ok`` where the metric has its number)."""
    for name in cfg.companions:
        keys = COMPANION_KEYS[name]
        if row["status"] != "ok":
            why = f"block not measured: {row['status']}"
        elif name in LOSS_COMPANIONS and not causal:
            why = "undefined for an encoder (no next-token loss)"
        else:
            why = row.get(f"status_{name}") or ("ok" if all(k in row for k in keys) else "not computed")
        row.update({k: row.get(k) if why == "ok" else None for k in keys})
        row[f"status_{name}"] = why
    return row
