# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Tutorial: from one model to a verdict
#
# A notebook in jupytext's percent format: open it in Jupyter with jupytext, or run it as a script
# (`python docs/tutorial/tutorial.py`). The default test run executes it (`tests/test_tutorial.py`), so every
# call below works on the code it ships with. Everything is tiny and local: a 2-block GPT-NeoX of width 32,
# a BPE trained in a second on the Python standard library's own source, no download, a few seconds of CPU.
#
# The steps: measure one model; save a few checkpoints of a short training run; sweep them, with untrained
# draws of the architecture for the band, into a store; read the rows, the verdict, and the report.

# %%
import sysconfig
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

import trajectory as tj

torch.manual_seed(0)
torch.set_num_threads(1)
work = Path(tempfile.mkdtemp(prefix="trajectory-tutorial-"))
stdlib = Path(sysconfig.get_paths()["stdlib"])
text = "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.glob("[a-c]*.py")))
(work / "eval.txt").write_text(text[:200_000], encoding="utf-8")

# %% [markdown]
# A tokenizer and a model. Any Hugging Face causal LM of a supported family works the same way; this one is
# built from a config so that nothing is downloaded.

# %%
bpe = Tokenizer(models.BPE())
bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
bpe.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(
    vocab_size=320,
    special_tokens=["<|endoftext|>"],
    show_progress=False,
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
)
bpe.train_from_iterator([text[:100_000]], trainer)
tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")

config = GPTNeoXConfig(
    vocab_size=320,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=128,
)
model = GPTNeoXForCausalLM(config)

# %% [markdown]
# ## 1. Measure one model
#
# `tj.measure` cuts the text into windows, holds 20% of them out by sequence, fits each FFN block's affine map
# on the rest in closed form, and scores it on the held-out windows. One row per block.

# %%
one = tj.measure(model, tokenizer, text_file=work / "eval.txt", n_tokens=2048, seq_len=64)
print(one.select("block", "r2_lin", "r2_lin_global", "n_train", "n_test"))

# %% [markdown]
# ## 2. Checkpoints of a short training run
#
# A folder with one sub-folder per revision (`step0`, `step2`, …) is what the `local` arm reads, as it would
# read a run of your own.

# %%
ids = tokenizer(text[:60_000])["input_ids"]
batches = torch.tensor(ids[: 16 * 64 * 8]).view(8 * 16, 64)
optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
steps = [0, 2, 4, 8]
for step in range(steps[-1] + 1):
    if step in steps:
        model.save_pretrained(work / "run" / f"step{step}")
        tokenizer.save_pretrained(work / "run" / f"step{step}")
    if step < steps[-1]:
        batch = batches[16 * step : 16 * (step + 1)]
        model.train()
        model(input_ids=batch, labels=batch).loss.backward()
        optimiser.step()
        optimiser.zero_grad()

# %% [markdown]
# ## 3. An experiment, swept into a store
#
# The manifest says what to measure: the checkpoints (`local` arm), 3 untrained draws of the same architecture
# (`random-init`, the band), the evaluation text and where the store is. The model above was drawn with the
# Hugging Face default init, N(0, 0.02), so the band is drawn the same way (`init = "hf-default"`); under the
# default for GPT-NeoX, its real small_init / wang_init, step 0 would lie outside the band and the report would
# say that the band describes another init. The sweep measures only what the store
# lacks, so running this cell twice measures nothing the second time.

# %%
manifest = work / "tiny.toml"
run_dir, eval_file, store = work / "run", work / "eval.txt", work / "store"
manifest.write_text(f"""
[experiment]
name = "tiny"
arms = ["local", "random-init"]

[model]
path = "{run_dir}"

[schedule]
revisions = [{", ".join(f'"step{s}"' for s in steps)}]

[data]
text_file = "{eval_file}"
tokens = 2048
seq_len = 64

[random_init]
seeds = 3
init = "hf-default"

[sweep]
store = "{store}"
""")
experiment = tj.load_manifest(manifest)
print(tj.sweep(experiment, progress=False).summary())
print(tj.sweep(experiment, progress=False).summary())  # the second time: everything cached

# %% [markdown]
# ## 4. Rows, verdict, report
#
# Every number is in the store with its provenance. The verdict holds each block's trajectory against the
# random-init band (mean ± t · sd · √(1 + 1/S) over the S draws): `learned-above` or `learned-below` when the
# trajectory leaves the band for good, `within-band` when it ends inside, `undetermined` otherwise (with 3
# draws and 4 checkpoints, a persistent exit rarely holds: the reason column says why).

# %%
rows = tj.results(experiment)
print(rows.select("arm", "revision", "block", "r2_lin").sort("arm", "block", "revision"))

verdicts = tj.verdict(experiment)
print(verdicts.select("arm", "block", "band_low", "band_high", "final", "verdict", "reason"))
for row in verdicts.iter_rows(named=True):
    print(f"block {row['block']}: {row['verdict']} ({row['reason']})")

# %% [markdown]
# The report is the same table with the figures: `trajectory report tiny.toml` on the command line, or
# `main([...])` in-process.

# %%
from trajectory.cli import main  # noqa: E402

main(["report", str(manifest), "--out", str(work / "figures")])
print(sorted(p.name for p in (work / "figures").iterdir()))
