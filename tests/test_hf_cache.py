"""The HF cache is the user's: a sweep evicts only what it downloaded itself, never offline, and two sweeps
sharing one cache never delete weights the other is using (issue 15, items 1 and 2)."""

import os
import subprocess
import sys

import pytest
from hubserver import REPO, build_checkpoints

from trajectory.config import DataSpec, MetricConfig
from trajectory.manifest import quick_manifest
from trajectory.scheduler import SweepOptions, run_sweep
from trajectory.sources.hub import HubSource, RetryPolicy

FAST = RetryPolicy(attempts=4, wait=0.05)
REVS = ["step0", "step4", "step8"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tokenizer):
    return build_checkpoints(tmp_path_factory.mktemp("cache") / "ck", [0, 4, 8, 16], tokenizer, same_as_step0=())


def manifest(tmp_path, text_file, store, revisions=REVS, tokens=1024):
    data = DataSpec("text", str(text_file), "text", tokens, 64)
    return quick_manifest(REPO, list(revisions), data, MetricConfig(), str(tmp_path / store))


def sweep(m, **kw):
    return run_sweep(m, SweepOptions(progress=False, retry=FAST, **kw))


def weight_files(cache) -> dict[str, int]:
    """Every weight file the cache holds (snapshot link → size of the blob it reaches)."""
    snaps = cache / HubSource(REPO).storage.name / "snapshots"
    return {
        str(p.relative_to(snaps)): p.stat().st_size
        for p in snaps.rglob("*")
        if p.name.endswith((".safetensors", ".bin")) and p.exists()
    }


def populate(how: str, tmp_path, text_file) -> None:
    """The user's own weights in the cache: from a ``--keep-weights`` sweep, or downloaded by hand."""
    if how == "keep-weights":
        assert sweep(manifest(tmp_path, text_file, "kept"), keep_weights=True).count("done") == len(REVS)
        return
    from huggingface_hub import hf_hub_download

    for rev in REVS:
        for name in ("config.json", "model.safetensors"):
            hf_hub_download(REPO, name, revision=rev)


@pytest.mark.parametrize("how", ["keep-weights", "by hand"])
def test_a_sweep_never_evicts_weights_the_user_already_had(how, hub, tmp_path, text_file, monkeypatch):
    cache = tmp_path / "cache"
    populate(how, tmp_path, text_file)
    owned = weight_files(cache)
    assert len(owned) == len(REVS)
    online = sweep(manifest(tmp_path, text_file, "online"))
    assert online.count("done") == len(REVS) and weight_files(cache) == owned
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    offline = sweep(manifest(tmp_path, text_file, "offline"))
    assert offline.count("done") == len(REVS) and weight_files(cache) == owned
    other = sweep(manifest(tmp_path, text_file, "other", tokens=768))  # other data: new units, same weights
    assert other.count("done") == len(REVS) and not other.failed, other.summary()
    from transformers import AutoModel

    for rev in REVS:
        AutoModel.from_pretrained(REPO, revision=rev, local_files_only=True)  # still loads, offline


def test_what_a_sweep_downloaded_itself_is_still_evicted_but_never_offline(hub, tmp_path, text_file, monkeypatch):
    cache = tmp_path / "cache"
    first = sweep(manifest(tmp_path, text_file, "a", revisions=["step0", "step4"]), keep_weights=True)
    assert first.count("done") == 2
    mine = sweep(manifest(tmp_path, text_file, "b", revisions=["step0", "step4", "step8", "step16"]))
    assert mine.count("done") == 4
    assert sorted(weight_files(cache)) == sorted(
        f"{hub.state.repos[REPO][r].commit}/model.safetensors" for r in ("step0", "step4")
    )  # step8 and step16 were this sweep's downloads: evicted; step0 and step4 were the user's: kept
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    kept = weight_files(cache)
    assert sweep(manifest(tmp_path, text_file, "c", revisions=["step0", "step4"])).count("done") == 2
    assert weight_files(cache) == kept


def test_weights_another_process_is_using_are_left_to_it_and_it_evicts_them(hub, tmp_path):
    """Two sources are two processes here: their leases are separate ``flock``s on one lock file."""
    from trajectory.sources.loading import load_model

    a, b = HubSource(REPO, retry=FAST), HubSource(REPO, retry=FAST)
    commit = a.pin(["step4"])["step4"]
    b.pin(["step4"])
    got_a = a.fetch("step4", commit)  # a downloads
    got_b = b.fetch("step4", commit)  # b finds them there (a's download, not the user's)
    a.release(got_a)  # a is done first: b still holds the snapshot, so nothing goes
    assert len(weight_files(tmp_path / "cache")) == 1
    load_model(str(got_b.path))
    b.release(got_b)  # b is last: it evicts what a downloaded
    assert weight_files(tmp_path / "cache") == {}


def test_two_sweep_processes_sharing_one_cache_both_finish_every_unit(hub, tmp_path, text_file):
    hub.state.latency = 0.02
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.endpoint,
        "HF_HUB_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "0",
        "OMP_NUM_THREADS": "1",
    }
    revs = ["step0", "step4", "step8", "step16"]

    def argv(store):
        return [sys.executable, "-m", "trajectory", "sweep", "--repo", REPO, "--revisions", ",".join(revs),
                "--text-file", str(text_file), "--tokens", "1024", "--seq-len", "64",
                "--store", str(tmp_path / store), "--no-progress"]  # fmt: skip

    procs = [subprocess.Popen(argv(s), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for s in "ab"]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e.decode()[-1500:] for _, e in outs]
    for out, _ in outs:
        assert f"{len(revs)} measured, 0 cached, 0 failed" in out.decode(), out.decode()
    assert weight_files(tmp_path / "cache") == {}  # and between them, they evicted all they downloaded
