"""`make sweep MODEL=pythia-160m` end to end, offline: the real manifest's hub, random-init and twin arms against
the local Hub stand-in, the twin on "Pythia's" rows read by HTTP range requests, and twin vs Pythia in one figure.

The stand-in serves, under the manifest's own names: ``EleutherAI/pythia-160m`` as tiny GPT-NeoX revisions
``step0`` … ``step16``; ``Salesforce/wikitext`` as a parquet of stdlib text (the evaluation data); and
``EleutherAI/pile-deduped-pythia-preshuffled`` at the manifest's pinned commit as a Megatron index plus a
``.bin`` cut into byte shards that do not fall on row boundaries.  The test overrides only what makes the
run tiny: the schedule (its first 6 points), the window budget, the random-init seeds, the twin's budget and
row length, and the store.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import struct
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from builders import stdlib_text
from hubserver import HubServer, HubState, build_checkpoints, point_client_at, serve_checkpoints

from trajectory.cli import main
from trajectory.config import Schedule
from trajectory.data import corpus
from trajectory.data.shards import MAGIC, IndexedShard
from trajectory.errors import TrajectoryError
from trajectory.manifest import load_manifest
from trajectory.store import Store

MANIFEST = Path(__file__).resolve().parent.parent / "manifests" / "pythia-160m.toml"
N_POINTS = 6  # step0, 1, 2, 4, 8, 16: Pythia's names
ROW = 65  # tokens per row (Pythia's: 2,049); 2 bytes each
ROWS_PER_UPDATE, UPDATES = 4, 16  # the twin reads rows 0 … 63
N_ROWS, SHARD_BYTES = 100, 3000  # 13,000 bytes of data in 5 shards; 3,000 is not a multiple of 130
PYTHIA_TOKENS_PER_STEP = 1024 * 2048  # Pythia's batch (the paper), which the manifest states

pytestmark = pytest.mark.usefixtures("one_thread")


def parquet_bytes(lines: list[str]) -> bytes:
    buf = io.BytesIO()
    pl.DataFrame({"text": lines}).write_parquet(buf)
    return buf.getvalue()


def megatron(rows: np.ndarray) -> tuple[bytes, bytes]:
    """(index, data) of a Megatron MMapIndexedDataset of equal-length uint16 rows, as Pythia's are laid out."""
    n, length = rows.shape
    sizes = np.full(n, length, np.int32)
    pointers = np.arange(n, dtype=np.int64) * length * 2
    head = MAGIC + struct.pack("<QBQQ", 1, 8, n, n + 1)
    return head + sizes.tobytes() + pointers.tobytes() + np.arange(n + 1, dtype=np.int64).tobytes(), rows.tobytes()


def pile_rows(tokenizer) -> np.ndarray:
    """N_ROWS × ROW token ids of stdlib text disjoint from the evaluation text."""
    ids = tokenizer(stdlib_text(1_000_000)[600_000:700_000])["input_ids"][: N_ROWS * ROW]
    return np.asarray(ids, dtype=np.uint16).reshape(N_ROWS, ROW)


def cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def tiny(manifest, store: Path):
    """The manifest, made tiny (see the module docstring); everything else is the file's own."""
    twin = replace(manifest.twin, steps=UPDATES, batch_tokens=ROWS_PER_UPDATE * ROW, seq_len=ROW)
    schedule = Schedule(manifest.schedule.points[:N_POINTS], manifest.schedule.tokens[:N_POINTS])
    data = replace(manifest.data, tokens=2048, seq_len=64)
    return replace(manifest, schedule=schedule, data=data, random_init_seeds=(0, 1, 2), twin=twin, store_dir=store)


@pytest.fixture(scope="module")
def flagship(tmp_path_factory, tokenizer):
    """The whole path, once: a CPU sweep that skips the twin, its report, the full sweep, its report, and a
    re-run of the twin from its cached rows.  Each step's exit code, output and server counters are kept."""
    root = tmp_path_factory.mktemp("flagship")
    real = load_manifest(MANIFEST)
    manifest = tiny(real, root / "store")
    repo, commit = real.twin.train_data.removeprefix("hub-shards:").split("@")
    rows = pile_rows(tokenizer)
    index, data = megatron(rows)
    (root / "local").mkdir()
    (root / "local" / "document.idx").write_bytes(index)
    (root / "local" / "document.bin").write_bytes(data)
    files = {"document.idx": index}
    shards = [data[i : i + SHARD_BYTES] for i in range(0, len(data), SHARD_BYTES)]
    files |= {f"document-{k:05d}-of-{len(shards) - 1:05d}.bin": s for k, s in enumerate(shards)}
    state = HubState()
    steps_served = [s for s, _ in manifest.schedule.points]
    serve_checkpoints(state, real.repo, build_checkpoints(root / "ck", steps_served, tokenizer))
    wikitext, path = real.data.path.split(":", 1)
    lines = [ln for ln in stdlib_text(300_000).splitlines() if ln.strip()]
    state.add_revision(f"datasets/{wikitext}", "main", {path: parquet_bytes(lines)})
    state.add_revision(f"datasets/{repo}", "main", files, commit=commit)
    steps = {}
    with HubServer(state) as server, pytest.MonkeyPatch.context() as mp:
        point_client_at(mp, server.endpoint, root / "hf")
        mp.setenv("TRAJECTORY_CACHE", str(root / "cache"))
        corpus.cache_dir.cache_clear()
        mp.setattr("trajectory.manifest.load_manifest", lambda _path: manifest)
        mp.setattr("trajectory.scheduler.cuda_available", lambda: False)  # a CPU-only machine, even on a GPU one
        argv = ("sweep", MANIFEST, "--no-progress")

        def step(name, *args, **patches):
            with pytest.MonkeyPatch.context() as inner:
                for target, value in patches.items():
                    inner.setattr(target.replace("__", "."), value)
                state.reset_counters()
                result = cli(*args)
            steps[name] = dict(
                result=result,
                requests=list(state.requests),
                pile_bytes=state.bytes_sent if all(pile(r, repo) for r in state.downloads()) else None,
            )

        step("cpu", *argv, trajectory__scheduler__TWIN_CPU_LIMIT_S=0.0)  # any twin is "too slow" here
        without_twin = Store(manifest.store_dir).read()
        step("full", *argv)
        step("report", "report", MANIFEST, "--out", root / "out")
        for unit in Store(manifest.store_dir).units.glob("*.parquet"):  # the twin's units and state, not its rows
            if pl.read_parquet(unit)["arm"][0] == "twin":
                unit.unlink()
        for folder in (manifest.store_dir / "twin").iterdir():
            (folder / "state.pt").unlink()
        step("again", *argv, "--arms", "twin", trajectory__scheduler__TWIN_CPU_LIMIT_S=0.0)  # named: runs anyway
    corpus.cache_dir.cache_clear()
    return dict(
        root=root,
        manifest=manifest,
        rows=rows,
        repo=repo,
        commit=commit,
        steps=steps,
        n_shards=len(shards),
        without_twin=without_twin,
    )


def pile(request, repo: str) -> bool:
    """A request for the pile dataset (not the model or the evaluation text)."""
    return f"/datasets/{repo}/" in request.path


def test_on_a_cpu_the_twin_is_skipped_with_one_line_and_the_other_arms_run(flagship):
    code, out, err = flagship["steps"]["cpu"]["result"]
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trajectory: skipping the twin: "), err
    assert "extrapolated by tokens" in lines[0]
    assert "--arms hub,random-init,twin" in lines[0] and "leave it out with --arms hub,random-init" in lines[0]
    # the printed estimate is the timed update scaled by tokens: seconds · total / probe tokens
    m = re.search(r"about ([\d.e+]+) (s|min|h|days) \(.* one update of (\d+)×(\d+) tokens that took ([\d.e+-]+) s, "
                  r"to ([\d,]+) tokens\)", lines[0])  # fmt: skip
    assert m, lines[0]
    rows, length, probe, total = int(m[3]), int(m[4]), float(m[5]), int(m[6].replace(",", ""))
    assert total == UPDATES * ROWS_PER_UPDATE * ROW and rows * length <= 256 and length <= ROW
    unit = {"s": 1, "min": 60, "h": 3600, "days": 86_400}[m[2]]
    assert float(m[1]) * unit == pytest.approx(probe * total / (rows * length), rel=0.1)
    summary = out.strip().splitlines()
    assert len(summary) == 1 and f"{N_POINTS + 3} measured, 0 cached, 0 failed" in summary[0]
    assert "; skipped: twin (training it on this CPU would take about" in summary[0]
    assert not any(pile(r, flagship["repo"]) for r in flagship["steps"]["cpu"]["requests"])  # nothing fetched


def test_without_the_twin_the_comparison_is_not_drawn_and_the_report_says_why(flagship, tmp_path):
    from trajectory.plots import context_from, twin_vs_pythia
    from trajectory.report import write_report

    frame, manifest = flagship["without_twin"], flagship["manifest"]
    drawn = twin_vs_pythia(frame, context_from(manifest, frame), tmp_path)
    assert drawn.paths == () and not list(tmp_path.iterdir())
    md = write_report(frame, manifest, tmp_path, [drawn], [])[0].read_text()
    assert "Not drawn: twin vs pythia: it needs usable rows of the twin and of a checkpoint arm" in md
    assert "none of the twin (trained arms with usable rows: hub)" in md
    assert "twin_vs_pythia" not in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)


def test_all_three_arms_run_and_the_twin_reads_exactly_its_rows_by_range_requests(flagship):
    code, out, err = flagship["steps"]["full"]["result"]
    assert code == 0 and err == "", err
    assert "6 measured" in out and f"{N_POINTS + 3} cached" in out and "skipped" not in out
    frame = Store(flagship["manifest"].store_dir).read()
    assert frame.group_by("arm").len().sort("arm").rows() == [("hub", 2 * N_POINTS), ("random-init", 6), ("twin", 12)]
    gets = [r for r in flagship["steps"]["full"]["requests"] if pile(r, flagship["repo"]) and r.filename]
    assert gets and all(r.method == "GET" and r.status == 206 for r in gets)
    need = UPDATES * ROWS_PER_UPDATE  # rows 0 … 63: 34 header bytes + 4-byte sizes + 8-byte pointers + the rows
    assert flagship["steps"]["full"]["pile_bytes"] == 34 + need * (4 + 8) + need * ROW * 2
    last = (need * ROW * 2 - 1) // SHARD_BYTES  # the shard holding the last byte of row 63
    assert {r.filename for r in gets} == {"document.idx"} | {f"document-{k:05d}-of-00004.bin" for k in range(last + 1)}
    assert flagship["n_shards"] - 1 > last  # the later shards exist and were never asked for


def test_the_cached_rows_equal_a_local_copy_and_carry_their_provenance(flagship):
    root, need = flagship["root"], UPDATES * ROWS_PER_UPDATE
    [meta] = (root / "cache" / "hub-shards").glob("*/*/rows-0-*.json")
    record = json.loads(meta.read_text())
    assert (record["repo"], record["commit"], record["rows"]) == (flagship["repo"], flagship["commit"], [0, need])
    assert record["row_tokens"] == ROW and record["files"][0] == {
        "file": "document-00000-of-00004.bin",
        "bytes": [0, 3000],
    }
    local = IndexedShard(root / "local" / "document").rows(np.arange(need), ROW)
    assert np.array_equal(np.load(meta.with_suffix(".npy")), local)
    assert np.array_equal(local, flagship["rows"][:need])


def test_twin_batch_b_is_pythias_rows_in_order(flagship):
    from trajectory.arms.twin import plan_runs

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRAJECTORY_CACHE", str(flagship["root"] / "cache"))
        point_client_at(mp, "http://127.0.0.1:9", flagship["root"] / "hf", offline=True)  # from the caches alone
        corpus.cache_dir.cache_clear()
        try:
            run = plan_runs(flagship["manifest"], flagship["manifest"].store_dir)[0]
            for b in (0, 7, UPDATES - 1):
                want = flagship["rows"][b * ROWS_PER_UPDATE : (b + 1) * ROWS_PER_UPDATE]
                assert np.array_equal(run.batch(b, "cpu").numpy(), want)
        finally:
            corpus.cache_dir.cache_clear()


def test_the_report_draws_twin_and_pythia_in_one_figure_by_fraction_and_by_tokens(flagship):
    from trajectory.plots import context_from, twin_vs_pythia

    code, out, err = flagship["steps"]["report"]["result"]
    assert code == 0, err
    folder = flagship["root"] / "out"
    md = (folder / "report.md").read_text()
    assert "twin_vs_pythia.png" in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md) and "Not drawn" not in md
    assert (folder / "twin_vs_pythia.png").stat().st_size > 10_000
    frame = Store(flagship["manifest"].store_dir).read()
    lines = twin_vs_pythia(frame, context_from(flagship["manifest"], frame), flagship["root"] / "again").data["lines"]
    assert set(lines["arm"]) == {"hub", "twin"}
    hub, twin = (lines.filter(pl.col("arm") == a) for a in ("hub", "twin"))
    assert (hub["tokens_seen"] == hub["step"] * PYTHIA_TOKENS_PER_STEP).all()
    assert (twin["tokens_seen"] == twin["step"] * ROWS_PER_UPDATE * ROW).all()
    assert twin["fraction"].max() == 1.0 and hub["fraction"].max() == 1.0


def test_a_twin_named_in_arms_runs_on_a_cpu_from_its_cached_rows_and_downloads_nothing(flagship):
    code, out, err = flagship["steps"]["again"]["result"]
    assert code == 0 and err == "" and "6 measured" in out and "skipped" not in out, err
    assert not any(pile(r, flagship["repo"]) for r in flagship["steps"]["again"]["requests"])


def test_without_network_the_real_manifest_fails_fast_in_one_line(tmp_path, monkeypatch, capsys):
    point_client_at(monkeypatch, "http://127.0.0.1:9", tmp_path / "hf")  # nothing listens on port 9
    monkeypatch.chdir(tmp_path)  # the manifest's store is a relative path
    start = time.perf_counter()
    code = main(["sweep", str(MANIFEST), "--no-progress"])
    out, err = capsys.readouterr()
    assert time.perf_counter() - start < 10
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "unreachable" in err and "HF_HUB_OFFLINE=1" in err


# -- the pieces: hub-shards on their own, and tokens per step ----------------------------------------------------
@pytest.fixture
def pile_hub(monkeypatch, tmp_path, tokenizer):
    """Only the pile dataset, served at a pinned commit and as ``main``; (state, rows, commit, cache folder)."""
    rows = pile_rows(tokenizer)
    index, data = megatron(rows)
    files = {"document.idx": index} | {
        f"document-{k:05d}-of-00004.bin": data[i : i + SHARD_BYTES]
        for k, i in enumerate(range(0, len(data), SHARD_BYTES))
    }
    state, commit = HubState(), "c0ffee" * 6 + "c0ff"
    state.add_revision("datasets/EleutherAI/pile-tiny", "main", files, commit=commit)
    with HubServer(state) as server:
        point_client_at(monkeypatch, server.endpoint, tmp_path / "hf")
        yield state, rows, commit, tmp_path / "cache"


def test_a_connection_cut_mid_body_is_resumed_from_the_last_byte(pile_hub):
    from hubserver import Fault

    from trajectory.data.hubshards import HubRows

    state, rows, commit, cache = pile_hub
    state.faults.append(Fault("truncate", filename="document-00000-of-00004.bin"))
    got = HubRows(f"EleutherAI/pile-tiny@{commit}", 30, cache).rows(np.arange(30), ROW)
    assert np.array_equal(got, rows[:30]) and state.faults[0].times == 0
    shard0 = [r for r in state.downloads() if r.filename == "document-00000-of-00004.bin"]
    assert len(shard0) == 2  # the cut request and the one resuming it
    assert state.bytes_sent == 34 + 30 * 12 + 30 * ROW * 2  # the resumed request asked only for what was missing


def test_unpinned_rows_resolve_main_once_then_come_from_the_cache_offline(pile_hub, monkeypatch):
    import json

    from trajectory.data.hubshards import HubRows

    state, rows, commit, cache = pile_hub
    first = HubRows("EleutherAI/pile-tiny", 20, cache)
    assert first.commit == commit and np.array_equal(first.rows(np.arange(20), 10), rows[:20, :10])
    [meta] = cache.glob("hub-shards/*/*/rows-0-20.json")
    assert json.loads(meta.read_text())["revision"] == "main" and meta.parent.name == commit
    state.reset_counters()
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    again = HubRows("EleutherAI/pile-tiny", 12, cache)  # fewer rows of the same revision: a cache hit
    assert again.data_hash != first.data_hash and again.commit == commit
    assert np.array_equal(again.rows(np.arange(12), ROW), rows[:12]) and state.requests == []
    with pytest.raises(TrajectoryError, match="not in the cache .* HF_HUB_OFFLINE=1"):
        HubRows("EleutherAI/pile-tiny", 21, cache)  # more rows than were fetched


def test_damaged_cached_rows_are_fetched_again(pile_hub):
    from trajectory.data.hubshards import HubRows

    state, rows, commit, cache = pile_hub
    HubRows(f"EleutherAI/pile-tiny@{commit}", 10, cache).load()
    [npy] = cache.glob("hub-shards/*/*/rows-0-10.npy")
    npy.write_bytes(npy.read_bytes()[:-2] + b"\xff\xff")  # one token flipped
    state.reset_counters()
    assert np.array_equal(HubRows(f"EleutherAI/pile-tiny@{commit}", 10, cache).rows(np.arange(10), ROW), rows[:10])
    assert state.bytes_sent == 34 + 10 * 12 + 10 * ROW * 2


@pytest.mark.parametrize(
    "arg, needle",
    [
        ("EleutherAI/pile-tiny@" + "0" * 40, "no such revision"),
        ("EleutherAI/no-such-pile", "no such dataset repo"),
        ("not-a-repo", "ORG/NAME[@COMMIT]"),
    ],
)
def test_hub_shard_errors_are_one_line(pile_hub, arg, needle):
    from trajectory.data.hubshards import HubRows

    with pytest.raises(TrajectoryError, match=re.escape(needle)) as info:
        HubRows(arg, 10, pile_hub[3]).load()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "form",
    ["rule = 'pythia'\nlast = 4000", "steps = [0, 1, 1000, 4000]", "revisions = ['step0', 'step1000', 'step4000']"],
)
def test_tokens_per_step_fills_tokens_seen_with_every_schedule_form(tmp_path, form):
    path = tmp_path / "m.toml"
    path.write_text(f'[model]\nrepo = "EleutherAI/pythia-160m"\n[schedule]\n{form}\ntokens_per_step = 2097152\n')
    schedule = load_manifest(path).schedule
    assert schedule.tokens_at("step0") == 0 and schedule.tokens_at("step1000") == 1000 * PYTHIA_TOKENS_PER_STEP
    assert schedule.tokens_at("step4000") == 4000 * 1024 * 2048
    path.write_text('[model]\nrepo = "EleutherAI/pythia-160m"\n[schedule]\ntokens_per_step = 0\n')
    with pytest.raises(TrajectoryError, match=r"\[schedule\] 'tokens_per_step' must be a positive integer"):
        load_manifest(path)
    known = Schedule(((0, "step0-tokens0B"), (1000, "step1000-tokens4B")), (0, 4_000_000_000))
    assert known.with_tokens_per_step(7).tokens == (0, 4_000_000_000)  # tokens a name gave are kept


def test_device_auto_is_the_cpu_without_cuda_and_cuda_without_one_is_one_line(monkeypatch, capsys):
    from trajectory import scheduler

    assert scheduler.resolve_device("auto") == "cpu" and scheduler.resolve_device("cpu") == "cpu"
    assert main(["sweep", str(MANIFEST), "--device", "cuda", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "torch sees no CUDA device" in err
    monkeypatch.setattr(scheduler, "cuda_available", lambda: True)
    assert scheduler.resolve_device("auto") == "cuda" and scheduler.resolve_device("cuda:1") == "cuda:1"
