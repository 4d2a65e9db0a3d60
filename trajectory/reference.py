"""The manifest reference (``docs/reference/manifest.md``), generated from the config dataclasses.

Every key of every ``manifests/*.toml`` section is listed with its type, default and meaning.  Keys that fill
a dataclass field take all three from the field: its annotation, its default, and its attribute docstring
(the string literal written under the field, which Sphinx's autodoc shows too).  The few keys that are TOML
spellings with no field of their own (``[data] text_file``, ``[schedule] rule``, …) are described in
:data:`TOML_ONLY`.  ``python -m trajectory.reference`` prints the page; the docs build writes it, and a test
holds the committed page equal to it, and every field to having a description.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap

from .config import DataSpec, Manifest, MetricConfig, TwinSpec
from .discovery import BranchRule

#: Each section's keys, in order: ``(key, (class, field))`` for a key that fills a dataclass field, or
#: ``(key, None)`` for one described in :data:`TOML_ONLY`.
SECTIONS: dict[str, list[tuple[str, tuple[type, str] | None]]] = {
    "experiment": [("name", (Manifest, "name")), ("arms", (Manifest, "arms")),
                   ("description", (Manifest, "description"))],
    "model": [("repo", (Manifest, "repo")), ("path", None), ("config", (Manifest, "model_config")),
              ("tokenizer", (Manifest, "tokenizer"))],
    "schedule": [("revisions", None), ("steps", None), ("rule", None), ("log_until", None), ("every", None),
                 ("last", None), ("points", None), ("revision_format", None), ("tokens_per_step", None),
                 ("pattern", (BranchRule, "pattern")), ("thin", (BranchRule, "thin")),
                 ("log_points", (BranchRule, "log_points")), ("branch", (BranchRule, "branch")),
                 ("step_scale", (BranchRule, "step_scale")), ("step_map", (BranchRule, "step_map")),
                 ("segments", None)],
    "data": [("text_file", None), ("parquet", None), ("dataset", None), ("embedded", None),
             *((f.name, (DataSpec, f.name)) for f in dataclasses.fields(DataSpec) if f.name not in ("kind", "path"))],
    "metric": [(f.name, (MetricConfig, f.name)) for f in dataclasses.fields(MetricConfig)],
    "random_init": [("seeds", (Manifest, "random_init_seeds")), ("init", (Manifest, "init_scheme")),
                    ("coverage", (Manifest, "band_coverage"))],
    "twin": [*((f.name, (TwinSpec, f.name)) for f in dataclasses.fields(TwinSpec)), ("seed", None),
             ("variants", None), ("perturbation", None)],
    "sweep": [("store", (Manifest, "store_dir")), ("prefetch", (Manifest, "prefetch")),
              ("workers", (Manifest, "workers"))],
    "reference": [("profile", (Manifest, "reference_profile")), ("label", (Manifest, "reference_label"))],
}  # fmt: skip

#: ``(section, key)`` → (type, default, meaning) for the keys that have no dataclass field of their own.
TOML_ONLY: dict[tuple[str, str], tuple[str, str, str]] = {
    ("model", "path"): (
        "str",
        "—",
        "A local folder of checkpoint sub-folders, relative to the manifest (instead of `repo`)."
    ),
    ("schedule", "revisions"): (
        "list[str]",
        "—",
        "Exactly these revisions, each named with its step (`step1000`); alone, or with `tokens_per_step`."
    ),
    ("schedule", "steps"): ("list[int]", "—", "Exactly these steps, named by `revision_format`."),
    ("schedule", "rule"): (
        "str",
        '"pythia"',
        "`pythia` (0, the doubling steps to `log_until`, then every `every` to `last`), `dense` (the doubling "
        "steps to `log_until`, then `points` evenly to `last`), `segments` (half-open ranges), or found when a "
        "sweep plans: `branches` (branch and tag names), `commits` (commit titles on `branch`), `repos` (one repo "
        "per checkpoint under the author `[model] repo` names); docs/suites.md."
    ),
    ("schedule", "segments"): (
        "list[[int, int, int]]",
        "—",
        "`segments`: `[[start, stop, every], …]`, the union of `range(start, stop, every)` (Stanford CRFM's 609).",
    ),
    ("schedule", "log_until"): (
        "int",
        "512 (`pythia`), 64 (`dense`)",
        "The doubling steps 1, 2, 4, … run up to this step."
    ),
    ("schedule", "every"): ("int", "1000", "`pythia`: the spacing of the linear steps after `log_until`."),
    ("schedule", "last"): ("int", "143000 (`pythia`), 1000 (`dense`)", "The schedule's last step."),
    ("schedule", "points"): ("int", "40", "`dense`: steps spread evenly from `log_until` to `last`."),
    ("schedule", "revision_format"): (
        "str",
        '"step{step}"',
        "How a step is named as a revision (must contain `{step}`)."
    ),
    ("schedule", "tokens_per_step"): (
        "int",
        "—",
        "Training tokens per optimiser step: each checkpoint stores `step × tokens_per_step` tokens seen."
    ),
    ("data", "text_file"): (
        "str",
        "—",
        "A UTF-8 text file (documents separated by blank lines), relative to the manifest."
    ),
    ("data", "parquet"): ("str", "—", "A local parquet file; its `column` holds the text."),
    ("data", "dataset"): ("str", "—", "`REPO:PATH`: a parquet file of a Hub dataset repo."),
    ("data", "embedded"): (
        "str",
        '"stdlib"',
        "The embedded corpus (the default source when none of the four is given)."
    ),
    ("twin", "seed"): ("int", "—", "Short for `seeds = [N]`."),
    ("twin", "variants"): (
        "table of tables",
        "—",
        "`[twin.variants.NAME]`: each overrides any `[twin]` field and is its own arm `twin:NAME` (docs/controls.md).",
    ),
    ("twin", "perturbation"): (
        "table",
        "—",
        "`[twin.perturbation]`: the moved-but-not-learned null, draws × points of θ₀ + ε (docs/controls.md).",
    ),
}  # fmt: skip


#: Defaults the manifest reader gives where the dataclass field has none of its own.
TOML_DEFAULTS = {
    ("experiment", "name"): "the file's name without `.toml`",
    ("experiment", "arms"): '`["hub", "random-init"]`',
    ("sweep", "store"): '`"store/<name>"`',
}


def field_docs(cls: type) -> dict[str, str]:
    """Each field of dataclass ``cls`` → its attribute docstring ("" when it has none), read from the source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {f.name: "" for f in dataclasses.fields(cls)}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id in docs:
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


def undocumented(classes: tuple[type, ...]) -> list[str]:
    """``Class.field`` for every field of ``classes`` without a description."""
    return [f"{c.__name__}.{name}" for c in classes for name, doc in field_docs(c).items() if not doc]


def _default(cls: type, name: str) -> str:
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        return "(built)"
    else:
        return "required" if name == "name" else "—"
    if value is None or value == "" or value == ():
        return "—"
    return f"`{list(value) if isinstance(value, tuple) else value!r}`".replace("'", '"')


def _md(text: str) -> str:
    """A docstring's reST literals as Markdown code, and roles as their target's last name."""
    text = re.sub(r":\w+:`~?([\w.]+)`", lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    return text.replace("``", "`").replace("|", "\\|")


def row(section: str, key: str, source: tuple[type, str] | None) -> str:
    if source is None:
        kind, default, meaning = TOML_ONLY[(section, key)]
    else:
        cls, name = source
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
        kind, default, meaning = str(hints[name]), _default(cls, name), _md(field_docs(cls)[name])
    default = TOML_DEFAULTS.get((section, key), default)
    kind = kind.replace("|", "\\|")  # a pipe inside a table cell, even in code, must be escaped
    return f"| `{key}` | `{kind}` | {default} | {meaning} |"


def markdown() -> str:
    """The whole reference page."""
    out = [
        "# Manifest reference",
        "",
        "Every section and key of a manifest (`manifests/*.toml`), generated from the config dataclasses by",
        "`python -m trajectory.reference` (their fields' docstrings; do not edit this page by hand). An unknown",
        "section or key is an error naming the file and the field. How a manifest is used: [Sweeping](../sweeping.md).",
        "",
    ]
    for section, keys in SECTIONS.items():
        out += [f"## `[{section}]`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        out += [row(section, key, source) for key, source in keys]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown(), end="")
