"""The documentation names only what exists.

Sphinx (``make docs``: ``-W -n``) fails on a ``:mod:``/``:func:``/``:class:`` role that names no documented
object.  These tests cover what Sphinx does not read: a dotted ``trajectory.…`` name written as a literal or in
a comment anywhere in the package, and the names and paths the Markdown pages cite.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOTTED = re.compile(r"(?<![\w/.-])trajectory(?:\.[A-Za-z_]\w*)+")
PATH = re.compile(r"(?<![\w/.-])((?:trajectory|tests|benches|manifests|docs)/[\w/.{}*<>-]*)")


def texts() -> list[Path]:
    return [*sorted((ROOT / "trajectory").rglob("*.py")), ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def resolves(name: str) -> bool:
    """``name`` is a module, or an attribute reached from the longest module prefix of it."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            fields = getattr(obj, "__dataclass_fields__", {})
            if not hasattr(obj, attr) and attr not in fields:
                return False
            obj = getattr(obj, attr, fields.get(attr))
        return True
    return False


def names_in(text: str) -> set[str]:
    found = set()
    for match in DOTTED.finditer(text):
        name = match.group(0)
        while name.endswith((".py", ".md", ".toml")) or name.split(".")[-1] in ("py", "md", "toml"):
            name = name.rsplit(".", 1)[0]
        found.add(name)
    return found


def test_every_dotted_trajectory_name_in_the_code_and_docs_exists():
    missing = []
    for path in texts():
        for name in sorted(names_in(path.read_text(encoding="utf-8"))):
            if not resolves(name):
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert not missing, "names that no module or attribute has:\n" + "\n".join(missing)


def test_every_repository_path_the_docs_cite_exists():
    missing = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for cited in sorted({c.rstrip(".-") for c in PATH.findall(path.read_text(encoding="utf-8"))}):
            if not set(cited) & set("{}*<>") and not (ROOT / cited).exists():  # a pattern is not a path
                missing.append(f"{path.relative_to(ROOT)}: {cited}")
    assert not missing, "paths that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("name, exists", [("trajectory.engine.stats", True), ("trajectory.stats", False),
                                          ("trajectory.config.Manifest.arms", True),
                                          ("trajectory.config.NoSuchThing", False)])  # fmt: skip
def test_the_resolver_tells_a_moved_module_from_a_real_one(name, exists):
    assert resolves(name) is exists
