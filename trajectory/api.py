"""The Python API: what a notebook imports from ``trajectory`` (re-exported there with ``__all__``).

    import trajectory as tj
    df = tj.measure(model, tokenizer, text_file="eval.txt", n_tokens=16_384, seq_len=128)  # one row per block
    m = tj.load_manifest("manifests/demo.toml")
    tj.sweep(m)                                   # measure what the store lacks
    tj.results(m).filter(pl.col("block") == 3)    # every stored row of the experiment
    tj.verdict(m)                                 # per trained arm, block and seed: band, exits, verdict
    tj.compare([m, "manifests/pythia-160m-seed1.toml"])  # several runs: trained band vs random-init band

The command line (:mod:`trajectory.cli`) is a thin layer over these functions.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from .config import (
    DEFAULT_BAND_COVERAGE,
    DEFAULT_HELDOUT_FRAC,
    DEFAULT_SEQ_LEN,
    DEFAULT_TOKENS,
    DEVICES,
    DataSpec,
    Manifest,
    MetricConfig,
)
from .errors import ConfigError, TrajectoryError
from .manifest import load_manifest
from .scheduler import SweepOptions, SweepReport, run_sweep
from .store import Store, with_discovered_schedule


def _tokens_for(tokenizer, text, text_file, tokens, n_tokens: int, seq_len: int):
    """Evaluation windows from exactly one of ``text``, ``text_file`` or ``tokens`` (ids)."""
    from .data.tokens import eval_tokens, from_ids, split_documents, windows

    given = [name for name, v in (("text", text), ("text_file", text_file), ("tokens", tokens)) if v is not None]
    if len(given) != 1:
        raise ConfigError(f"give exactly one of text=, text_file= or tokens=, got {given or 'none'}")
    if tokens is not None:
        return from_ids(tokens, seq_len)
    if tokenizer is None:
        raise ConfigError("text needs a tokenizer: measure(model, tokenizer, text=…)")
    if text_file is not None:
        return eval_tokens(DataSpec("text", str(text_file), tokens=n_tokens, seq_len=seq_len), tokenizer)
    return windows(split_documents(text), tokenizer, n_tokens, seq_len, "text")


def _device_of(model) -> str:
    param = next(model.parameters(), None)
    return str(param.device) if param is not None else "cpu"


#: How the API names what the CLI calls by a flag: a message raised below :func:`measure` is reworded with
#: these, so a notebook reads the argument it passes (``n_tokens``), never a flag it has not got.
API_WORDS = {
    "--tokens": "n_tokens",
    "--seq-len": "seq_len",
    "seq-len": "seq_len",
    "--allow-long": "allow_long=True",
    "--device": "device",
    "--heldout-frac": "heldout_frac",
    "heldout-frac": "heldout_frac",
}


@contextmanager
def api_wording():
    """Inside, a :class:`.TrajectoryError` leaves with its CLI flags replaced by :data:`API_WORDS`."""
    try:
        yield
    except TrajectoryError as exc:
        message = str(exc)
        for flag, word in API_WORDS.items():
            message = message.replace(flag, word)
        raise type(exc)(message) from None


def _check_model_object(model, revision) -> None:
    """A model object must be a loaded transformers model, and a revision (for a model by name) is refused."""
    if not (hasattr(model, "config") and hasattr(model, "parameters")):
        raise ConfigError(f"model must be a transformers model, a Hub id or a local folder, got {type(model).__name__}")
    if revision is not None:
        raise ConfigError(
            f"revision={revision!r} is for a model given by name; a model object is measured as it is, "
            "so the revision would be ignored"
        )
    if any(p.is_meta for p in model.parameters()):
        raise ConfigError("the model's weights are on the meta device (never loaded); load or materialise them")


def _check_by_name(tokenizer, text, tokens) -> None:
    """A model by name brings its own tokenizer and reads ``text_file``: anything else would be ignored."""
    for name, value in (("tokenizer", tokenizer), ("text", text), ("tokens", tokens)):
        if value is not None:
            raise ConfigError(
                f"{name}= is for a model object; a model given by name uses its own tokenizer on text_file=, "
                f"so {name}= would be ignored"
            )


def _whole(name: str, value) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    return value


def measure(
    model,
    tokenizer=None,
    *,
    text: str | None = None,
    text_file: str | Path | None = None,
    tokens=None,
    n_tokens: int = DEFAULT_TOKENS,
    seq_len: int = DEFAULT_SEQ_LEN,
    heldout_frac: float = DEFAULT_HELDOUT_FRAC,
    seed: int = 0,
    companions=(),
    precision: str = "mixed",
    device: str | None = None,
    revision: str | None = None,
    allow_long: bool = False,
) -> pl.DataFrame:
    """R²_lin of every FFN block of ``model``: a polars DataFrame with one row per block.

    ``model`` is a transformers model in memory (mid-training is fine: every module's ``training`` flag is
    restored afterwards) or a Hub id / local folder (with ``revision``), loaded in float32.  Evaluation
    windows come from exactly one of ``text`` (documents separated by blank lines), ``text_file`` or
    ``tokens`` (token ids, 1-D or (n_seq, seq_len)); ``n_tokens`` are cut into windows of ``seq_len``.
    Windows are split by sequence into train and held-out (``heldout_frac``, seeded by ``seed``); the affine
    map is fitted on train rows in closed form and scored on held-out rows.  ``companions``: any of
    ``linearity_score``, ``effective_rank``, ``ci``, ``swap``, or ``"all"``.  ``allow_long`` lets windows
    run past a rotary model's ``max_position_embeddings`` (refused otherwise, as the CLI refuses them).

    What a call could not use is refused, never ignored: ``revision`` with a model object; ``tokenizer``,
    ``text`` or ``tokens`` with a model by name (it brings its own tokenizer and reads ``text_file``).
    Every refusal is one :class:`~trajectory.errors.TrajectoryError` line naming the argument.

    >>> df = measure(model, tokenizer, text_file="eval.txt", n_tokens=4096, seq_len=64)  # doctest: +SKIP
    >>> df.select("block", "r2_lin")                                                      # doctest: +SKIP
    """
    with api_wording():
        return _measure(model, tokenizer, text, text_file, tokens, n_tokens, seq_len, heldout_frac, seed,
                        companions, precision, device, revision, allow_long)  # fmt: skip


def _measure(model, tokenizer, text, text_file, tokens, n_tokens, seq_len, heldout_frac, seed, companions,
             precision, device, revision, allow_long) -> pl.DataFrame:  # fmt: skip
    """:func:`measure`, its arguments checked before any work, in the order a caller would fix them."""
    n_tokens, seq_len = _whole("n_tokens", n_tokens), _whole("seq_len", seq_len)
    if companions is None:
        raise ConfigError("companions must be a list of names (or 'all'); give () for none, got None")
    cfg = MetricConfig(heldout_frac=heldout_frac, seed=seed, companions=companions, compute_dtype=precision)
    if device is not None:
        check_device(device)
    if isinstance(model, str | Path):
        _check_by_name(tokenizer, text, tokens)
        if text_file is None:
            raise ConfigError("a model given by name needs text_file=")
        data = DataSpec("text", str(text_file), tokens=n_tokens, seq_len=seq_len, allow_long=allow_long)
        return blocks_frame(measure_revision(str(model), revision, data, cfg, device or "cpu"))
    from .engine.measure import check_budget, check_positions, check_vocab, measure_blocks, split_by_document

    _check_model_object(model, revision)
    windows = _tokens_for(tokenizer, text, text_file, tokens, n_tokens, seq_len)
    check_positions(model.config, windows.ids.shape[1], allow_long, what="seq_len")
    check_vocab(windows, model.config.vocab_size)
    check_budget(windows, split_by_document(windows, cfg), model.config.hidden_size)
    blocks = measure_blocks(model, windows, cfg, device=device or _device_of(model))
    return blocks_frame({"data_hash": windows.data_hash, "metric_config": cfg.digest(), "blocks": blocks})


def measure_revision(name: str, revision: str | None, data: DataSpec, cfg: MetricConfig, device: str = "cpu") -> dict:
    """What ``trajectory measure NAME --revision R`` prints: model, revision, data hash, metric config,
    weights hash and one dict per block.  The architecture is checked before any weights are loaded."""
    from .arms.checkpoints import measure_checkpoint
    from .data.tokens import eval_tokens
    from .engine.adapters import adapter_for
    from .engine.measure import check_budget, check_positions, check_vocab, split_by_document
    from .sources.loading import load_config, load_tokenizer

    check_device(device)
    config = load_config(name, revision)
    adapter_for(config.model_type)  # fail on the architecture before any weights move
    check_positions(config, data.seq_len, data.allow_long)
    tokens = eval_tokens(data, load_tokenizer(name, revision))
    check_vocab(tokens, config.vocab_size)
    check_budget(tokens, split_by_document(tokens, cfg), config.hidden_size)
    blocks, wh = measure_checkpoint(name, tokens, cfg, device, revision)
    return {
        "model": name,
        "revision": revision or "main",
        "data_hash": tokens.data_hash,
        "metric_config": cfg.digest(),
        "weights_hash": wh,
        "blocks": blocks,
    }


def top_tokens(
    model,
    tokenizer=None,
    *,
    block: int,
    top: int = 20,
    text: str | None = None,
    text_file: str | Path | None = None,
    tokens=None,
    data: DataSpec | None = None,
    n_tokens: int = DEFAULT_TOKENS,
    seq_len: int = DEFAULT_SEQ_LEN,
    heldout_frac: float = DEFAULT_HELDOUT_FRAC,
    seed: int = 0,
    revision: str | None = None,
    device: str = "cpu",
    context: int = 4,
    min_count: int = 5,
) -> dict:
    """The ``top`` held-out tokens of ``block`` with the largest non-linear share
    ``s_t = ‖r_t‖² / ‖y_t − ȳ‖²`` (r_t the residual of the block's affine fit on train rows, ȳ the held-out
    mean of the FFN output), each with ``context`` tokens either side decoded by ``tokenizer``; and per token
    id seen ≥ ``min_count`` times, its mean share and count — what ``trajectory tokens`` prints
    (:mod:`trajectory.engine.toptokens`; docs/tokens.md).  ``model`` is a model in memory or a Hub id / local
    folder (with ``revision``; its tokenizer is loaded); the windows (from ``text``, ``text_file``, ``tokens``
    or a :class:`~trajectory.config.DataSpec` ``data``) and the split are :func:`measure`'s.
    """
    from .engine.toptokens import top_tokens as scan

    name = str(model) if isinstance(model, str | Path) else None
    if name is not None:
        from .sources.loading import load_model, load_tokenizer

        check_device(device)
        tokenizer = tokenizer or load_tokenizer(name, revision)
        model, _ = load_model(name, revision, device=device)
    if data is not None:
        from .data.tokens import eval_tokens

        windows = eval_tokens(data, tokenizer)
    else:
        windows = _tokens_for(tokenizer, text, text_file, tokens, n_tokens, seq_len)
    cfg = MetricConfig(heldout_frac=heldout_frac, seed=seed)
    found = scan(model, windows, cfg, block, top, min_count, device)
    decode = (lambda ids: tokenizer.decode(list(ids))) if tokenizer is not None else (lambda ids: str(list(ids)))
    rows = [{**r, **_context(windows.ids[r["window"]], r["position"], context, decode)} for r in found.rows]
    by_id = [{**r, "token": decode([r["token_id"]])} for r in found.by_id]
    return {"model": name or type(model).__name__, "revision": revision or "main", "block": block,
            "data_hash": windows.data_hash, "n_test": found.n_test, "tokens": rows, "by_id": by_id}  # fmt: skip


def _context(window, position: int, width: int, decode) -> dict:
    """The token at ``position`` of ``window`` and ``width`` tokens either side, decoded."""
    return {
        "token": decode(window[position : position + 1]),
        "before": decode(window[max(0, position - width) : position]),
        "after": decode(window[position + 1 : position + 1 + width]),
    }


def check_device(device: str) -> None:
    """``device`` is one of :data:`~trajectory.config.DEVICES` or ``cuda:N``, and a CUDA device must exist
    before anything is loaded or any unit runs (checked once, here)."""
    if not (isinstance(device, str) and (device in DEVICES or re.fullmatch(r"cuda:\d+", device))):
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)} or cuda:N, got {device!r}")
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA device is available (torch.cuda.is_available() is False)")


def finite_or_null(blocks: list[dict]) -> list[dict]:
    """NaN is neither JSON nor a number: a flagged block's metrics become ``None`` beside its ``status``."""
    return [{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in b.items()} for b in blocks]


def blocks_frame(result: dict) -> pl.DataFrame:
    """One row per block of a measurement result, with its data hash and metric config."""
    rows = [
        {**b, "data_hash": result["data_hash"], "metric_config": result["metric_config"]}
        for b in finite_or_null(result["blocks"])
    ]
    return pl.DataFrame(rows, infer_schema_length=None)


def _manifest(manifest: Manifest | str | Path) -> Manifest:
    return manifest if isinstance(manifest, Manifest) else load_manifest(manifest)


def sweep(manifest: Manifest | str | Path, **options) -> SweepReport:
    """Measure every unit of ``manifest`` that its store lacks; ``options`` as :class:`.SweepOptions`."""
    return checked_sweep(_manifest(manifest), SweepOptions(**options))


def checked_sweep(manifest: Manifest, options: SweepOptions) -> SweepReport:
    """:func:`~trajectory.scheduler.run_sweep` after the checks that need no unit: the device exists, the
    store is a folder that can be written, and prefetch and workers are in range."""
    from .atomic import writable_folder

    check_device(options.device)
    writable_folder(manifest.store_dir, "store")
    for name, value, low in (("prefetch", options.prefetch, 0), ("workers", options.workers, 1)):
        if value is not None and not (isinstance(value, int) and value >= low):
            raise ConfigError(f"--{name} must be an integer ≥ {low}, got {value!r}")
    return run_sweep(manifest, options)


def results(source: Manifest | str | Path) -> pl.DataFrame:
    """Every stored row of a manifest's experiment (a manifest or its path), or of a whole store folder,
    sorted by arm, seed, step and block."""
    if isinstance(source, Manifest) or str(source).endswith(".toml"):
        manifest = _manifest(source)
        if not Path(manifest.store_dir).is_dir():
            raise TrajectoryError(
                f"store folder not found: {manifest.store_dir} (experiment {manifest.name!r} has no results; "
                "run trajectory sweep first)"
            )
        frame = Store(manifest.store_dir).read().filter(pl.col("experiment") == manifest.name)
    else:
        if not Path(source).is_dir():
            raise TrajectoryError(f"store folder not found: {source}")
        frame = Store(source).read()
    return frame.sort(["arm", "seed", "step", "block"], nulls_last=True)


def verdict(
    source: Manifest | str | Path | pl.DataFrame,
    arm: str | None = None,
    metric: str = "r2_lin",
    coverage: float | None = None,
    data_hash: str | None = None,
    controls: bool = False,
) -> pl.DataFrame:
    """The verdict table (:mod:`trajectory.verdicts`), from stored rows only: one row per trained arm, block and
    seed with the random-init prediction band (``band_low``, ``band_high``), the final value and ``z``, the first
    exit and its direction, the peak, the persistent exit and whether it holds, the seed's verdict and the block's
    agreed ``verdict``, ``reason`` and ``warning`` — what ``trajectory report --json`` prints.

    ``source`` is a manifest (its band coverage and training lengths are used), its path, a store folder or a
    frame; ``coverage`` overrides the band's; ``data_hash`` picks one evaluation when the store holds several.
    ``controls``: the verdict against each control instead (:mod:`trajectory.verdicts.controls`, docs/controls.md).
    """
    from . import verdicts as rules
    from .verdicts import controls as against

    manifest = _manifest(source) if isinstance(source, Manifest) or str(source).endswith(".toml") else None
    if manifest is not None:  # a schedule found among branches: as the sweep recorded it (as `report` reads it)
        manifest = with_discovered_schedule(manifest)
    frame = source if isinstance(source, pl.DataFrame) else results(manifest or source)
    frame, _ = rules.one_evaluation(frame, data_hash)
    frame, _ = rules.one_init(frame, manifest.init_scheme if manifest else None)
    cover = coverage if coverage is not None else (manifest.band_coverage if manifest else DEFAULT_BAND_COVERAGE)
    totals = manifest.total_steps() if manifest else None
    if controls:
        return against.controls_table(frame, against.control_arms(manifest, frame), metric, cover, totals)
    return rules.verdict_table(frame, metric, cover, totals, [arm] if arm else None)


def compare(
    manifests: list[Manifest | str | Path], metric: str = "r2_lin", data_hash: str | None = None, per: str = "step"
) -> pl.DataFrame:
    """Several experiments' trained runs of one architecture on one evaluation, from stored rows only — what
    ``trajectory report A.toml B.toml … --json`` prints, as polars (:mod:`trajectory.verdicts.runs`).

    ``per="step"`` (default): one row per block and step that every run measured, with the trained band
    (``trained_mean``, ``trained_sd``, ``trained_min``, ``trained_max``, ``trained_low``, ``trained_high``,
    ``trained_width``) beside the random-init band (``init_*``), and the block's answers repeated on each row:
    ``agreement``, ``verdict``, ``reason`` (do the runs' verdicts agree?) and ``final_agreement``,
    ``final_reason`` (do their final values?).  ``per="block"``: one row per block with the answers and both
    bands at the last common step.  ``per="run"``: each run's verdict table per block (the single-run rules).
    Manifests over different architectures or evaluations raise a :class:`.ConfigError` naming which differs.

    >>> tj.compare(["manifests/pythia-160m.toml", "manifests/pythia-160m-seed1.toml"], per="block")  # doctest: +SKIP
    """
    from .experiments import compare as numbers
    from .experiments import read_experiments

    if per not in ("step", "block", "run"):
        raise ConfigError(f"per must be 'step', 'block' or 'run', got {per!r}")
    cmp = numbers(read_experiments([_manifest(m) for m in manifests], data_hash, metric))
    if per == "block":
        return cmp.blocks
    if per == "run":
        return cmp.run_table
    answers = cmp.blocks.select("block", "agreement", "verdict", "reason", "final_agreement", "final_reason")
    return cmp.band.join(answers, on="block", how="left").sort("block", "step")
