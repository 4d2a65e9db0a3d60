"""A twin with dropout is reproducible: seeded from the twin seed, its generator state saved and restored with the
training state, so two runs, and an interrupted-then-resumed run, give bit-identical weights at every step
(issue 15, item 5).  A damaged ``state.pt`` restarts its run from the init with a one-line notice."""

from __future__ import annotations

import polars as pl
import pytest
from builders import run_arm, stdlib_text, twin_manifest

from trajectory.arms import training, twin
from trajectory.cli import main
from trajectory.config import twin_schedule
from trajectory.manifest import load_manifest
from trajectory.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")

SCHEDULE = [0, 1, 2, 4, 8, 16]
BUDGET = 12
STEPS = [t for t, _ in twin_schedule(SCHEDULE, BUDGET)]  # 0, 1, 2, 4, 6, 8, 12
#: What a row holds besides timings: its provenance, its numbers and the hash of the trunk's weights.
COMPARED = ["seed", "step", "block", "commit", "weights_hash", "r2_lin", "r2_lin_global", "r2_median_dim", "cond"]


def write_manifest(folder, tiny_dir, eval_file, train_file, seeds=(0, 1)):
    return twin_manifest(
        folder / "tiny-dropout.toml", tokenizer=tiny_dir, eval_file=eval_file, train_file=train_file,
        store=folder / "store", schedule=f"steps = {SCHEDULE}", config="hidden_dropout = 0.1\nattention_dropout = 0.1",
        twin=f"steps = {BUDGET}\nbatch_tokens = 256\nlr = 3e-3\nseeds = {list(seeds)}",
    )  # fmt: skip


def rows(store: Store) -> pl.DataFrame:
    return store.read().select(COMPARED).sort("seed", "step", "block")


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "train.txt"
    path.write_text(stdlib_text(1_000_000)[400_000:], encoding="utf-8")  # disjoint from the evaluation text
    return path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_dir, text_file, train_file):
    """Two uninterrupted runs of the same two-seed manifest, into two stores, in one process."""
    out = []
    for _ in range(2):
        folder = tmp_path_factory.mktemp("run")
        manifest = load_manifest(write_manifest(folder, tiny_dir, text_file, train_file))
        assert {o.status for o in run_arm(manifest, "twin")} == {"done"}
        out.append(rows(Store(manifest.store_dir)))
    return out


def test_dropout_is_on_in_the_manifest_s_twin(tmp_path, tiny_dir, text_file, train_file):
    manifest = load_manifest(write_manifest(tmp_path, tiny_dir, text_file, train_file))
    run = twin.plan_runs(manifest, tmp_path)[0]
    assert run.config.hidden_dropout == 0.1 and run.config.attention_dropout == 0.1


def test_two_uninterrupted_runs_give_bit_identical_weights_at_every_step(uninterrupted):
    first, second = uninterrupted
    assert first.height == 2 * len(STEPS) * 2  # two seeds, every step, two blocks
    assert first.equals(second)  # weights hashes and every number, exactly


def test_different_seeds_give_different_weights_at_every_step(uninterrupted):
    first, _ = uninterrupted
    by_seed = [first.filter(pl.col("seed") == s).sort("step", "block")["weights_hash"].to_list() for s in (0, 1)]
    assert all(a != b for a, b in zip(*by_seed))


def test_the_dropout_masks_come_from_the_seeded_generator(tmp_path, tiny_dir, text_file, train_file, monkeypatch,
                                                          uninterrupted):  # fmt: skip
    """Same init and data, another dropout seed: the weights part from step 1 on, so dropout was drawn, and
    drawn from the generator the run seeded (had it not been seeded, the two uninterrupted runs would differ)."""
    monkeypatch.setattr(twin, "dropout_seed", lambda seed: training.dropout_seed(seed) + 1)
    manifest = load_manifest(write_manifest(tmp_path, tiny_dir, text_file, train_file, seeds=(0,)))
    run_arm(manifest, "twin")
    other = rows(Store(manifest.store_dir)).filter(pl.col("step") > 0)["weights_hash"].to_list()
    base = uninterrupted[0].filter((pl.col("seed") == 0) & (pl.col("step") > 0))["weights_hash"].to_list()
    assert len(other) == len(base) and all(a != b for a, b in zip(other, base))


@pytest.mark.parametrize("stop_at", [(0, 5), (1, 3)], ids=["seed0-update5", "seed1-update3"])
def test_an_interrupted_run_resumes_to_the_same_rows(tmp_path, tiny_dir, text_file, train_file, monkeypatch,
                                                     uninterrupted, stop_at):  # fmt: skip
    """KeyboardInterrupt inside an update, then a fresh arm in the same process: the resumed run restores the
    generator saved with the state and ends with exactly the uninterrupted run's rows."""
    manifest = load_manifest(write_manifest(tmp_path, tiny_dir, text_file, train_file))
    store, real = Store(manifest.store_dir), twin.train_step

    def interrupted(run, model, opt, t, device):
        if (run.seed, t) == stop_at:
            raise KeyboardInterrupt
        return real(run, model, opt, t, device)

    monkeypatch.setattr(twin, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_arm(manifest, "twin", store)
    assert 0 < store.read().height < uninterrupted[0].height
    calls = []
    monkeypatch.setattr(twin, "train_step", lambda run, *a: calls.append((run.seed, a[2])) or real(run, *a))
    run_arm(manifest, "twin", store)
    seed, t = stop_at
    assert calls[0] == (seed, max(s for s in STEPS if s <= t))  # resumed from the last state, not from 0
    assert rows(store).equals(uninterrupted[0])


def test_a_truncated_state_restarts_its_run_with_a_one_line_notice(tmp_path, tiny_dir, text_file, train_file,
                                                                   monkeypatch, capsys, uninterrupted):  # fmt: skip
    path = write_manifest(tmp_path, tiny_dir, text_file, train_file, seeds=(0,))
    manifest, real = load_manifest(path), twin.train_step

    def interrupted(run, model, opt, t, device):
        if t == 5:
            raise KeyboardInterrupt
        return real(run, model, opt, t, device)

    monkeypatch.setattr(twin, "train_step", interrupted)
    assert main(["sweep", str(path), "--no-progress"]) == 130
    state = twin.plan_runs(manifest, manifest.store_dir)[0].folder / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 3])
    done = {p.name: p.stat().st_mtime_ns for p in Store(manifest.store_dir).units.glob("*.parquet")}
    capsys.readouterr()
    monkeypatch.setattr(twin, "train_step", real)
    assert main(["sweep", str(path), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    notices = [line for line in err.splitlines() if line.strip()]
    assert len(notices) == 1 and notices[0].startswith("trajectory: twin seed 0: ") and "state.pt" in notices[0]
    assert "training this run again from step 0" in notices[0] and "Traceback" not in err
    assert f"{len(STEPS) - len(done)} measured, {len(done)} cached, 0 failed" in out
    store = Store(manifest.store_dir)
    assert all(p.stat().st_mtime_ns == done[p.name] for p in store.units.glob("*.parquet") if p.name in done)
    assert rows(store).equals(uninterrupted[0].filter(pl.col("seed") == 0))
