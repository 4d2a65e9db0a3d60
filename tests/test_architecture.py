"""The shape of the package: data flows one way, and no module imports one above it.

Layers, bottom to top (a module may import its own layer and the ones below):

    0 errors, config, provenance, discovery,    leaves: settings, a unit's arm and provenance, schedules read from
      names, online, atomic, progress,          branch names, safe names, online state, atomic writes, malloc
      allocator                                 thresholds
    1 manifest, data/, reference                TOML → config; evaluation and training tokens; the manifest reference
    2 engine/                                   model + windows → per-block rows (no polars, no Hub)
    3 sources/                                  where checkpoints, configs and tokenizers come from
    4 store, stored                             parquet units keyed by provenance; what a store alone records
    5 arms/, compress/                         plan() → units, run(unit) → rows; ablations, plans, compressed folders
    6 scheduler                                 runs the arms' units, one failure policy
    7 verdicts, verify, track                   numbers from the store; a training run measured in its loop
                                                (its band checked at step 0)
    8 plots/                                    figures from the store
    9 report, experiments, multireport          figures + verdicts → Markdown and HTML (one experiment, or several)
   10 api, cli, tables, __main__, __init__             the public surface
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "trajectory"
LAYERS = {
    "errors": 0, "config": 0, "provenance": 0, "variants": 0, "schedule": 0, "discovery": 0, "names": 0,
    "atomic": 0, "progress": 0, "allocator": 0, "online": 0,
    "manifest": 1, "manifest_twin": 1, "data": 1, "reference": 1,
    "engine": 2,
    "sources": 3,
    "store": 4, "stored": 4,
    "arms": 5, "compress": 5,
    "scheduler": 6,
    "verdicts": 7, "verify": 7, "track": 7,
    "plots": 8,
    "report": 9, "controlreport": 9, "seedreport": 9, "experiments": 9, "multireport": 9,
    "api": 10, "api_compress": 10, "cli": 10, "__main__": 10, "__init__": 10,
}  # fmt: skip


def _top(module: str) -> str:
    """``trajectory.engine.stats`` → ``engine``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    return "trajectory." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def _imports(source: str, module: str) -> list[str]:
    """Every ``trajectory`` module that ``source`` (the text of ``module``) imports, as absolute names."""
    package = module.removesuffix(".__init__") if module.endswith(".__init__") else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = ".".join(p for p in (base, node.module or "") if p) if node.level else (node.module or "")
            if target.startswith("trajectory"):
                out += [f"{target}.{a.name}" for a in node.names] if not node.module else [target]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("trajectory")]
    return out


def upward(source: str, module: str) -> list[str]:
    mine = LAYERS[_top(module)]
    return [m for m in _imports(source, module) if LAYERS.get(_top(m), 99) > mine]


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_one_above_it(path):
    module = module_name(path)
    assert _top(module) in LAYERS, f"{path.name}: add its layer to LAYERS"
    found = upward(path.read_text(), module)
    assert not found, f"{path.relative_to(PACKAGE)} (layer {LAYERS[_top(module)]}) imports {found}"


@pytest.mark.parametrize(
    "source, module",
    [
        ("from .engine.measure import measure_blocks", "trajectory.config"),  # relative, one level
        ("from ..scheduler import run_sweep", "trajectory.arms.twin"),  # relative, two levels
        ("from .. import verdicts", "trajectory.plots.band"),  # allowed: plots sit above verdicts
        ("import trajectory.api", "trajectory.store"),  # absolute
        ("def f():\n    from ..plots import plot_all", "trajectory.engine.stats"),  # inside a function
    ],
)
def test_the_rule_sees_every_form_of_import(source, module):
    expected = "verdicts" not in source
    assert bool(upward(source, module)) is expected


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path):
    assert len(path.read_text().splitlines()) <= 420, f"{path.name} has grown past ~400 lines: split the concept"


def test_engine_needs_neither_polars_nor_the_hub():
    for path in (PACKAGE / "engine").glob("*.py"):
        text = path.read_text()
        assert "import polars" not in text and "huggingface_hub" not in text, path.name


def test_loading_a_manifest_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, trajectory\n"
        "trajectory.load_manifest('manifests/demo.toml')\n"
        "print('torch' in sys.modules, 'polars' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr
