"""The results store: atomic units, provenance keys, tolerant reader."""

import warnings

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trajectory.config import Provenance
from trajectory.store import KEY_FIELDS, Store

PROV = dict(
    experiment="e",
    arm="hub",
    model="m",
    seed=None,
    revision="step0",
    step=0,
    commit="c0",
    data_hash="d0",
    metric_config="k0",
)


def unit_key(prov: dict) -> str:
    return Provenance(**prov).key()


def rows(prov, n_blocks=3, r2=0.5):
    return [{**prov, "block": b, "r2_lin": r2 + b / 10, "status": "ok"} for b in range(n_blocks)]


def test_any_change_of_provenance_changes_the_key():
    base = unit_key(PROV)
    for field in KEY_FIELDS:
        assert unit_key({**PROV, field: "other"}) != base, field
    with pytest.raises(TypeError):  # every key field must be given
        unit_key({k: v for k, v in PROV.items() if k != "commit"})


def test_unit_round_trip_and_failure_cleared_on_success(tmp_path):
    store, key = Store(tmp_path), unit_key(PROV)
    store.record_failure(key, PROV, "download failed after retries")
    assert [f["reason"] for f in store.failures()] == ["download failed after retries"]
    store.write_unit(key, rows(PROV))
    assert store.has(key) and store.failures() == []
    frame = store.read()
    assert frame.height == 3 and frame["r2_lin"].to_list() == pytest.approx([0.5, 0.6, 0.7])
    assert set(frame["key"]) == {key} and frame["code_version"][0]


def test_rewriting_a_unit_never_duplicates_rows(tmp_path):
    store, key = Store(tmp_path), unit_key(PROV)
    store.write_unit(key, rows(PROV))
    store.write_unit(key, rows(PROV))
    assert store.read().height == 3
    assert not list(store.units.glob(".tmp-*"))


def test_truncated_and_foreign_files_are_reported_and_skipped(tmp_path):
    store = Store(tmp_path)
    store.write_unit(unit_key(PROV), rows(PROV))
    good = next(store.units.glob("*.parquet"))
    (store.units / "truncated.parquet").write_bytes(good.read_bytes()[:100])
    pl.DataFrame({"x": [1, 2]}).write_parquet(store.units / "foreign.parquet")
    (store.failed / "junk.json").write_text("{not json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = store.read()
        failures = store.failures()
    assert frame.height == 3 and failures == []
    text = " ".join(str(w.message) for w in caught)
    assert "truncated.parquet" in text and "foreign.parquet" in text and "junk.json" in text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_reader_survives_any_bytes_in_the_store(tmp_path, blob):
    store = Store(tmp_path / "s")
    store.units.mkdir(parents=True, exist_ok=True)
    (store.units / "x.parquet").write_bytes(blob)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = store.read()
    assert frame.columns == list(Store(tmp_path).read().columns)


def damage(store: Store, how: str) -> tuple[str, bytes]:
    """Write a good unit for ``PROV`` and another, then damage the first's file ``how``: (its key, bytes)."""
    key, other = unit_key(PROV), unit_key({**PROV, "revision": "step1", "step": 1})
    store.write_unit(key, rows(PROV))
    store.write_unit(other, rows({**PROV, "revision": "step1", "step": 1}))
    path, good = store.unit_path(key), store.unit_path(key).read_bytes()
    data = {
        "truncated": good[: len(good) // 2],
        "garbage": b"PAR1" + bytes(range(256)) * 4,
        "empty": b"",
        "copied": store.unit_path(other).read_bytes(),  # another unit's file under this key's name
    }[how]
    path.write_bytes(data)
    return key, data


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "copied"])
def test_a_damaged_unit_is_not_stored_and_is_moved_aside_whole(tmp_path, how):
    store = Store(tmp_path)
    key, data = damage(store, how)
    assert not store.has(key) and not store.unit_path(key).exists()
    (moved, reason), *more = store.moved
    assert not more and moved.parent == store.quarantine and moved.read_bytes() == data and reason
    assert store.has(unit_key({**PROV, "revision": "step1", "step": 1}))  # the other unit is untouched
    key2, data2 = damage(store, how)  # the same damage again: a second quarantined copy, the first kept
    assert not store.has(key2) and sorted(p.read_bytes() for p in store.quarantine.iterdir()) == sorted([data, data2])


def test_an_edited_provenance_with_its_key_column_rewritten_is_caught_by_the_recomputed_key(tmp_path):
    store = Store(tmp_path)
    key = unit_key(PROV)
    store.write_unit(key, rows({**PROV, "commit": "c1"}))  # rows of another commit, named by c0's key
    assert not store.has(key) and "not the hash of its rows' provenance" in store.moved[0][1]


def test_checking_a_100_unit_store_takes_well_under_a_second(tmp_path):
    import time

    store = Store(tmp_path)
    keys = []
    for i in range(100):
        prov = {**PROV, "revision": f"step{i}", "step": i}
        keys.append(unit_key(prov))
        store.write_unit(keys[-1], rows(prov, n_blocks=12))
    fresh = Store(tmp_path)  # what a re-run sees: nothing checked yet
    start = time.process_time()  # CPU time: the shared test machine's wall clock says more about its load
    assert all(fresh.has(k) for k in keys)
    first = time.process_time() - start
    start = time.process_time()
    assert all(fresh.has(k) for k in keys)  # the scheduler asks again: answered from the stat
    again = time.process_time() - start
    assert first < 0.5 and again < 0.05, (first, again)


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_unit_and_failure_files_get_the_umask_s_permissions(tmp_path, umask):
    import os
    import stat

    old = os.umask(umask)
    try:
        store = Store(tmp_path / "s")
        store.write_unit(unit_key(PROV), rows(PROV))
        store.record_failure(unit_key({**PROV, "step": 1}), PROV, "x")
    finally:
        os.umask(old)
    for path in [*store.units.iterdir(), *store.failed.iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name


def test_a_temporary_file_left_by_a_killed_write_is_no_unit_and_no_warning(tmp_path):
    store = Store(tmp_path)
    store.write_unit(unit_key(PROV), rows(PROV))
    (store.units / ".tmp-k1ll3d.parquet").write_bytes(store.unit_path(unit_key(PROV)).read_bytes()[:50])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.read().height == 3 and [p.name for p in store.unit_files()] == [f"{unit_key(PROV)}.parquet"]


def test_a_file_replaced_after_it_was_judged_is_not_moved_aside(tmp_path):
    store = Store(tmp_path)
    key, _ = damage(store, "garbage")
    judged = store.unit_path(key).stat().st_ino
    store.write_unit(key, rows(PROV))  # another process writes the unit anew (a new inode) meanwhile
    assert store.move_aside(store.unit_path(key), "garbage", judged) is None
    assert store.has(key) and list(store.quarantine.iterdir()) == []
