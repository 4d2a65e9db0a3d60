"""The manifest reference is generated from the config dataclasses, and nothing in it is missing or stale."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from trajectory import reference
from trajectory.config import DataSpec, Manifest, MetricConfig, Provenance, TwinSpec
from trajectory.discovery import BranchRule
from trajectory.errors import ManifestError
from trajectory.manifest import load_manifest
from trajectory.schedule import Schedule

ROOT = Path(__file__).resolve().parent.parent
CONFIG_CLASSES = (MetricConfig, DataSpec, TwinSpec, Manifest, Provenance, BranchRule, Schedule)


def test_every_field_of_every_config_dataclass_has_a_description():
    assert reference.undocumented(CONFIG_CLASSES) == [], "write a docstring under each of these fields"


def test_a_field_without_a_description_is_named():
    @dataclasses.dataclass
    class Toy:
        a: int = 1
        """Documented."""
        b: str = ""

    assert reference.undocumented((Toy,)) == ["Toy.b"]
    assert reference.field_docs(Toy) == {"a": "Documented.", "b": ""}


def test_the_committed_page_is_the_one_the_dataclasses_give():
    committed = (ROOT / "docs" / "reference" / "manifest.md").read_text(encoding="utf-8")
    assert committed == reference.markdown(), "regenerate: python -m trajectory.reference > docs/reference/manifest.md"


def _accepted_keys(tmp_path: Path, section: str) -> set[str]:
    """The keys the manifest reader accepts in ``section``, as its unknown-field error lists them."""
    toml = tmp_path / "m.toml"
    tables = {"experiment": 'name = "m"', "model": 'repo = "org/model"'}
    tables[section] = tables.get(section, "") + "\nzz_unknown = 1"
    toml.write_text("".join(f"[{name}]\n{body}\n" for name, body in tables.items()))
    with pytest.raises(ManifestError, match="unknown field") as err:
        load_manifest(toml)
    listed = str(err.value).split("must be one of ", 1)[1].split(" (unknown field)")[0]
    return set(ast.literal_eval(listed))


@pytest.mark.parametrize("section", list(reference.SECTIONS))
def test_the_reference_lists_exactly_the_keys_the_reader_accepts(tmp_path, section):
    documented = {key for key, _ in reference.SECTIONS[section]}
    assert documented == _accepted_keys(tmp_path, section)


def test_every_key_has_a_type_a_default_column_and_a_meaning():
    for section, keys in reference.SECTIONS.items():
        for key, source in keys:
            cells = [c.strip() for c in reference.row(section, key, source).strip("|").split(" | ")]
            assert len(cells) == 4 and all(cells), (section, key, cells)
