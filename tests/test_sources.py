"""Checkpoint sources against the local Hub stand-in (tests/hubserver.py) and local folders."""

import hashlib

import httpx2
import pytest
import torch
from hubserver import REPO, Fault, build_checkpoints, files_of, point_client_at
from huggingface_hub import errors as hf_errors

from trajectory.errors import TrajectoryError
from trajectory.sources.hub import HubSource, RetryPolicy, is_transient, with_retries
from trajectory.sources.loading import load_model
from trajectory.sources.local import LocalDirSource, content_hash

FAST = RetryPolicy(attempts=4, wait=0.01)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tokenizer):
    return build_checkpoints(tmp_path_factory.mktemp("src") / "ck", [0, 1, 4, 8], tokenizer, bin_steps=(8,))


def source(**kw) -> HubSource:
    return HubSource(REPO, retry=FAST, **kw)


def http_error(status: int) -> hf_errors.HfHubHTTPError:
    response = httpx2.Response(status, request=httpx2.Request("GET", "http://127.0.0.1/x"))
    return hf_errors.HfHubHTTPError(f"{status} error", response=response)


@pytest.mark.parametrize("status,transient", [(429, True), (500, True), (503, True), (404, False), (403, False)])
def test_http_status_classification(status, transient):
    assert is_transient(http_error(status)) is transient


def test_retries_stop_at_the_first_permanent_failure_and_give_up_after_the_budget():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise http_error(500)
        return "ok"

    assert with_retries(flaky, FAST, sleep=lambda s: None) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(hf_errors.HfHubHTTPError):
        with_retries(lambda: calls.append(1) or (_ for _ in ()).throw(http_error(404)), FAST, sleep=lambda s: None)
    assert len(calls) == 1
    waits = []
    with pytest.raises(hf_errors.HfHubHTTPError):
        with_retries(lambda: (_ for _ in ()).throw(http_error(502)), RetryPolicy(3, 1.0, 1.5), sleep=waits.append)
    assert waits == [1.0, 1.5]


def test_pin_resolves_commits_marks_gaps_and_records_refs_in_the_cache(hub, tmp_path):
    src = source()
    pins = src.pin(["step0", "step4", "step99"])
    served = hub.state.repos[REPO]
    assert pins == {"step0": served["step0"].commit, "step4": served["step4"].commit, "step99": None}
    assert (src.storage / "refs" / "step4").read_text() == served["step4"].commit
    offline = HubSource(REPO, offline=True)
    assert offline.pin(["step0", "step4", "step99"]) == pins  # from the cache's refs/, no request
    api = [r.path for r in hub.state.requests if r.path.startswith("/api/models/")]
    assert len(api) == 2  # model_info (first contact) + list_repo_refs, once


def test_offline_without_a_populated_cache_says_what_to_do(tmp_path, monkeypatch):
    point_client_at(monkeypatch, "http://127.0.0.1:9", tmp_path / "empty", offline=True)
    with pytest.raises(TrajectoryError, match="HF_HUB_OFFLINE"):
        HubSource(REPO).pin(["step0"])


def test_fetch_downloads_config_and_weights_only_and_prefers_safetensors(hub, ckpts):
    files = files_of(ckpts / "step4")
    files["pytorch_model.bin"] = (ckpts / "step8" / "pytorch_model.bin").read_bytes()
    hub.state.add_revision(REPO, "step5", files)
    src = source()
    pins = src.pin(["step5"])
    got = src.fetch("step5", pins["step5"])
    fetched = {r.filename for r in hub.state.downloads()}
    assert fetched == {"config.json", "model.safetensors"}
    assert sorted(p.name for p in got.path.iterdir()) == ["config.json", "model.safetensors"]


def test_a_pytorch_bin_revision_loads_through_the_weights_only_path(hub, ckpts):
    src = source()
    pins = src.pin(["step8"])
    got = src.fetch("step8", pins["step8"])
    assert (got.path / "pytorch_model.bin").is_file() and not (got.path / "model.safetensors").exists()
    model, _ = load_model(str(got.path))
    saved = torch.load(ckpts / "step8" / "pytorch_model.bin", weights_only=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[f"gpt_neox.{name}"]), name


def test_release_evicts_weights_but_keeps_a_blob_another_snapshot_links(hub):
    src = source()
    pins = src.pin(["step0", "step1", "step4"])
    a, b = (src.fetch(r, pins[r]) for r in ("step0", "step1"))  # identical weights: one blob
    blobs = lambda: {p.name for p in (src.storage / "blobs").iterdir()}  # noqa: E731
    weights_blob = (a.path / "model.safetensors").resolve().name
    assert src.weights_on_disk() == 2
    src.release(a)
    assert weights_blob in blobs() and src.weights_on_disk() == 1
    load_model(str(b.path))  # still loadable
    src.release(b)
    assert weights_blob not in blobs() and src.weights_on_disk() == 0
    assert (a.path / "config.json").is_file()  # configs stay: small, and the budget check reads them
    kept = source(keep_weights=True)
    kept.pin(["step4"])
    kept.release(kept.fetch("step4", pins["step4"]))
    assert kept.weights_on_disk() == 1


def test_a_truncated_body_is_fetched_again_and_arrives_whole(hub):
    hub.state.faults.append(Fault("truncate", revision="step4", filename="model.safetensors"))
    src = source()
    got = src.fetch("step4", src.pin(["step4"])["step4"])
    statuses = [r.status for r in hub.state.requests if r.filename == "model.safetensors" and r.method == "GET"]
    assert len(statuses) == 2 and statuses[1] in (200, 206)  # 206: resumed (chunks ≥ 10 MB were kept)
    data = (got.path / "model.safetensors").read_bytes()
    served = hub.state.repos[REPO]["step4"].files["model.safetensors"]
    assert hashlib.sha256(data).digest() == hashlib.sha256(served).digest()


def test_evicted_revision_offline_fails_in_one_line(hub, monkeypatch):
    src = source()
    pins = src.pin(["step4"])
    src.release(src.fetch("step4", pins["step4"]))
    offline = HubSource(REPO, offline=True)
    offline.pin(["step4"])
    with pytest.raises(TrajectoryError, match="not in the local cache") as err:
        offline.fetch("step4", pins["step4"])
    assert "\n" not in str(err.value)


def test_local_source_pins_by_content(tmp_path, ckpts):
    import shutil

    root = tmp_path / "run"
    for rev in ("step0", "step4"):
        shutil.copytree(ckpts / rev, root / rev)
    src = LocalDirSource(root)
    pins = src.pin(["step0", "step4", "step9"])
    assert pins["step9"] is None and pins["step0"] != pins["step4"] and len(pins["step0"]) == 40
    (root / "step4" / "config.json").write_text((root / "step4" / "config.json").read_text() + " ")
    assert src.pin(["step4"])["step4"] != pins["step4"] == content_hash(ckpts / "step4")
    assert src.tokenizer_path() == str(root / "step0")
    assert src.fetch("step4", pins["step4"]).path == root / "step4"


def test_a_prefetched_revision_whose_shared_blob_was_evicted_meanwhile_is_fetched_again(
    hub, text_file, tokenizer, tmp_path
):
    """The race a prefetch can lose: step1 links step0's blob, then releasing step0 deletes it."""
    from concurrent.futures import Future

    from trajectory.arms.checkpoints import CheckpointArm
    from trajectory.config import DataSpec, MetricConfig
    from trajectory.manifest import quick_manifest
    from trajectory.scheduler import SweepOptions, run_group

    data = DataSpec("text", str(text_file), tokens=1024, seq_len=64)
    manifest = quick_manifest(REPO, ["step0", "step1"], data, MetricConfig(), str(tmp_path / "store"))
    arm = CheckpointArm(manifest, "hub", SweepOptions(progress=False))
    unit = arm.plan()[1]
    b = arm.source.fetch("step1", unit.provenance.commit)
    (b.path / "model.safetensors").resolve().unlink()  # what a concurrent eviction of step0's shared blob leaves
    assert (b.path / "model.safetensors").is_symlink() and not (b.path / "model.safetensors").exists()
    prefetched = Future()
    prefetched.set_result(b)
    arm._futures[unit.key] = prefetched  # as if the prefetch thread had fetched it before the eviction
    (outcome,) = run_group(arm, [unit], str(tmp_path / "store"))
    assert outcome.status == "done", outcome.reason
