"""The Python API of compression (:mod:`trajectory.compress`; docs/compress.md), re-exported by ``trajectory``.

    import trajectory as tj
    df = tj.ablations(model, tokenizer, text_file="eval.txt", n_tokens=16_384, seq_len=128)  # block × ablation
    result = tj.compress(model, tokenizer, text_file="eval.txt", budget_dloss=0.05, out="small/")
    small = tj.load_compressed("small/")          # a transformers model, the chosen FFNs replaced in memory

``trajectory compress`` (:mod:`trajectory.cli.compress`) is a thin layer over these functions.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from .api import _device_of, _tokens_for, check_device, finite_or_null
from .config import DEFAULT_HELDOUT_FRAC, DEFAULT_SEQ_LEN, DEFAULT_TOKENS, DataSpec, MetricConfig


def _compress_inputs(model, tokenizer, revision, data: dict):
    """(model, tokenizer, windows, base): a model in memory, or one loaded by name (with its head when it is a
    causal LM), and the evaluation windows (``data``: text, text_file, tokens, embedded, n_tokens, seq_len)."""
    from .compress.run import BaseModel

    base = BaseModel()
    if isinstance(model, str | Path):
        from .engine.adapters import adapter_for
        from .sources.loading import load_config, load_model, load_tokenizer

        name = str(model)
        causal = adapter_for(load_config(name, revision).model_type).causal
        model, _ = load_model(name, revision, with_head=causal)
        if tokenizer is None or isinstance(tokenizer, str):
            tokenizer = load_tokenizer(tokenizer or name, None if tokenizer else revision)
        base = BaseModel(name, revision, "local" if Path(name).is_dir() else "hub")
    elif isinstance(tokenizer, str):
        from .sources.loading import load_tokenizer

        tokenizer = load_tokenizer(tokenizer)
    n_tokens, seq_len = data.pop("n_tokens"), data.pop("seq_len")
    embedded = data.pop("embedded")
    if embedded is not None and all(v is None for v in data.values()):
        from .data.tokens import eval_tokens

        return (
            model,
            tokenizer,
            eval_tokens(DataSpec("embedded", embedded, tokens=n_tokens, seq_len=seq_len), tokenizer),
            base,
        )
    return (
        model,
        tokenizer,
        _tokens_for(tokenizer, data["text"], data["text_file"], data["tokens"], n_tokens, seq_len),
        base,
    )


def compress(
    model,
    tokenizer=None,
    *,
    text: str | None = None,
    text_file: str | Path | None = None,
    tokens=None,
    embedded: str | None = None,
    n_tokens: int = DEFAULT_TOKENS,
    seq_len: int = DEFAULT_SEQ_LEN,
    heldout_frac: float = DEFAULT_HELDOUT_FRAC,
    seed: int = 0,
    ranks=None,
    budget_dloss: float | None = None,
    table: bool = True,
    out: str | Path | None = None,
    device: str | None = None,
    revision: str | None = None,
):
    """Per-block ablations (remove, mean, rank r, affine; ``table``), the greedy joint plan within
    ``budget_dloss`` (nats of held-out loss) and, with ``out``, a folder :func:`load_compressed` reads back:
    a :class:`trajectory.compress.run.CompressionResult`.  ``model``: in memory, or a Hub id / local folder
    (with ``revision``); text as for :func:`.api.measure`, or ``embedded="stdlib"`` (the embedded corpus's
    evaluation part).  The split, the maps and the interval: docs/compress.md."""
    from .compress.run import compress_model
    from .compress.spec import CompressConfig

    cfg = CompressConfig(
        MetricConfig(heldout_frac=heldout_frac, seed=seed, compute_dtype="float64"),
        tuple(ranks) if ranks is not None else None,
        budget_dloss,
    )
    if device is not None:
        check_device(device)
    data = dict(text=text, text_file=text_file, tokens=tokens, embedded=embedded, n_tokens=n_tokens, seq_len=seq_len)
    model, tokenizer, windows, base = _compress_inputs(model, tokenizer, revision, data)
    dev = device or _device_of(model)
    return compress_model(model, windows, cfg, table=table, out=out, base=base, tokenizer=tokenizer, device=dev)


def ablations(model, tokenizer=None, **kwargs) -> pl.DataFrame:
    """Every block × every ablation of ``model`` alone (:func:`compress` without a plan), as polars: block,
    third, ablation, rank, loss, dloss [dloss_low, dloss_high] (paired 95% t interval over held-out windows),
    dppl, ppl_ratio [low, high] (an encoder: rel_error [low, high]), params_removed, flops_removed, r2_lin."""
    result = compress(model, tokenizer, **{**kwargs, "budget_dloss": None, "out": None, "table": True})
    return pl.DataFrame(finite_or_null(result.report.rows), infer_schema_length=None)


def load_compressed(path: str | Path, device: str = "cpu"):
    """A folder written by ``compress(…, out=DIR)`` as a standard ``transformers`` model, its chosen FFNs
    replaced in memory; refused in one line unless every file matches its recorded sha256."""
    from .compress.folder import load_compressed as load

    return load(path, device)
