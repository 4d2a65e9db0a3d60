"""Tiny models, tokenizers and texts that the tests build themselves (nothing is downloaded)."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import torch

TINY = dict(hidden=32, layers=2, heads=4, vocab=320, positions=256)
#: Families built like Llama (grouped-query attention, gated MLP); OLMo-2 norms the sublayers' outputs.
LLAMA_LIKE = ("qwen2", "mistral", "olmo", "olmo2")


def stdlib_text(n_chars: int = 400_000) -> str:
    """Real text present on every machine: the CPython standard library's own source."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for path in sorted(root.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text)
        if size >= n_chars:
            break
    return "\n\n".join(parts)[:n_chars]


def tiny_tokenizer(vocab: int = TINY["vocab"]):
    """A byte-level BPE trained on stdlib text, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([stdlib_text(100_000)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def tiny_config(model_type: str, **overrides):
    """A 2-block config of the family, hidden size 32."""
    from transformers import BertConfig, GPT2Config, GPTNeoXConfig, LlamaConfig

    h, layers, heads, vocab, pos = (TINY[k] for k in ("hidden", "layers", "heads", "vocab", "positions"))
    if model_type == "gpt_neox":
        cfg = GPTNeoXConfig(
            vocab_size=vocab,
            hidden_size=h,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * h,
            max_position_embeddings=pos,
            eos_token_id=0,
            bos_token_id=0,
        )
    elif model_type == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_embd=h, n_layer=layers, n_head=heads, n_positions=pos)
    elif model_type == "llama" or model_type in LLAMA_LIKE:
        from transformers import AutoConfig

        shape = dict(
            vocab_size=vocab,
            hidden_size=h,
            intermediate_size=2 * h,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=2,
            max_position_embeddings=pos,
        )
        if model_type == "llama":
            cfg = LlamaConfig(**shape)
        else:
            cfg = AutoConfig.for_model(model_type, **shape, pad_token_id=0, bos_token_id=0, eos_token_id=0)
    elif model_type == "bert":
        cfg = BertConfig(
            vocab_size=vocab,
            hidden_size=h,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=2 * h,
            max_position_embeddings=pos,
        )
    elif model_type == "bloom":
        from transformers import BloomConfig

        cfg = BloomConfig(vocab_size=vocab, hidden_size=h, n_layer=layers, n_head=heads, bos_token_id=0, eos_token_id=0)
    else:
        raise ValueError(model_type)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def tiny_model(model_type: str, seed: int = 0, **overrides):
    """A randomly initialised tiny model with an LM head (or a bare BERT encoder), in eval mode."""
    from transformers import AutoModel, AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = tiny_config(model_type, **overrides)
    cls = AutoModel if model_type == "bert" else AutoModelForCausalLM
    model = cls.from_config(cfg)
    _perturb_norms(model, seed)
    return model.eval()


@torch.no_grad()
def _perturb_norms(model, seed: int) -> None:
    """Give LayerNorms non-trivial gains and biases, as a trained model has."""
    gen = torch.Generator().manual_seed(seed + 1)
    for mod in model.modules():
        if hasattr(mod, "weight") and "Norm" in type(mod).__name__:
            mod.weight.copy_(1.0 + 0.3 * torch.randn(mod.weight.shape, generator=gen))
            if getattr(mod, "bias", None) is not None:
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=gen))


def save_tiny(path: Path, model_type: str = "gpt_neox", seed: int = 0, tokenizer=None) -> Path:
    """Save a tiny model (safetensors) and tokenizer into ``path``."""
    model = tiny_model(model_type, seed)
    model.save_pretrained(path)
    (tokenizer or tiny_tokenizer()).save_pretrained(path)
    return path


def local_manifest(
    path: Path,
    ckpts: Path,
    text_file: Path,
    steps,
    store: Path,
    *,
    arms=("local",),
    tokens: int = 2048,
    extra: str = "",
) -> Path:
    """Write an experiment over a folder of local checkpoints (``ckpts/step<N>/``) to ``path``."""
    path.write_text(f"""
[experiment]
name = "{path.stem}"
arms = {list(arms)!r}
[model]
path = "{ckpts}"
[schedule]
steps = {list(steps)}
[data]
text_file = "{text_file}"
tokens = {tokens}
seq_len = 64
[sweep]
store = "{store}"
{extra}
""")
    return path


def run_arm(manifest, arm: str, store=None, device: str = "cpu", workers: int = 1):
    """One arm of ``manifest`` through the scheduler (plan, skip the stored, run the rest): its outcomes."""
    from trajectory.arms import make_arm
    from trajectory.scheduler import SweepOptions
    from trajectory.scheduler import run_arm as schedule
    from trajectory.store import Store

    options = SweepOptions(progress=False, device=device)
    store = store or Store(manifest.store_dir)
    return schedule(make_arm(manifest, arm, options), store, options, workers).outcomes


def key_of(provenance: dict) -> str:
    """The store key of a provenance given as a dict (missing fields are None)."""
    from trajectory.config import Provenance

    return Provenance.from_row(provenance).key()


def twin_manifest(
    path: Path,
    *,
    tokenizer: Path,
    eval_file: Path,
    train_file: Path,
    store: Path,
    schedule: str,
    twin: str,
    arms=("twin",),
    tokens: int = 2048,
    config: str = "",
    sections: str = "",
) -> Path:
    """A manifest training a tiny GPT-NeoX twin (hidden 32, 2 blocks) on ``train_file``, measured on ``eval_file``.

    ``schedule`` and ``twin`` are the bodies of those tables; ``config`` adds lines to ``[model.config]``;
    ``sections`` appends whole tables (``[metric]``, ``[random_init]``, …).
    """
    path.write_text(f"""
[experiment]
name = "{path.stem}"
arms = {list(arms)!r}
[model]
tokenizer = "{tokenizer}"
[model.config]
model_type = "gpt_neox"
vocab_size = 320
hidden_size = 32
num_hidden_layers = 2
num_attention_heads = 4
intermediate_size = 128
max_position_embeddings = 256
{config}
[schedule]
{schedule}
[data]
text_file = "{eval_file}"
tokens = {tokens}
seq_len = 64
[twin]
seq_len = 64
train_data = "text:{train_file}"
{twin}
[sweep]
store = "{store}"
{sections}
""")
    return path


#: Tolerance for float64 statistics compared across thread counts or process layouts.  A float reduction
#: split over k threads adds k partial sums in another order, so the last bits move: issue 21 reports
#: |ΔR²_lin| ≈ 1e-9 between one process of 2 threads and two of 1 on a 2-core Intel Xeon.
#: 1e-8 is ten times that; a difference a verdict could read is many orders larger.
LAYOUT_TOL = 1e-8


def assert_rows_match(a, b, tol: float = LAYOUT_TOL) -> None:
    """Two row frames from runs of one computation in other layouts: same columns, same height, every
    non-float column (keys, revisions, commits, statuses, hashes) equal exactly, every float column within
    ``|x − y| ≤ tol · max(1, |y|)`` (absolute for R² in (−∞, 1], relative for a large condition number),
    NaN exactly where the other is NaN."""
    import numpy as np
    import polars as pl

    assert a.columns == b.columns and a.height == b.height, (a.columns, b.columns, a.height, b.height)
    floats = [c for c, t in a.schema.items() if t in (pl.Float32, pl.Float64)]
    exact = [c for c in a.columns if c not in floats]
    assert a.select(exact).equals(b.select(exact)), "non-float columns differ"
    for col in floats:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        assert (np.isnan(x) == np.isnan(y)).all(), f"{col}: NaN in one run only"
        ok = np.isnan(x) | (np.abs(x - y) <= tol * np.maximum(1.0, np.abs(y)))
        assert ok.all(), f"{col}: max |Δ| {np.nanmax(np.abs(x - y)):.3g} over the tolerance {tol:g}"
