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
