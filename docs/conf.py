"""Sphinx configuration: the Markdown pages (MyST) and the API reference from the docstrings.

Built by ``make docs`` with ``-W -n --keep-going``: every warning is an error, and nitpicky mode makes each
``:mod:``, ``:class:``, ``:func:``, ``:meth:``, ``:attr:`` or ``:data:`` reference that names no documented
object (a module that moved, a function renamed) a warning too.  Nothing is fetched: no intersphinx, so names
from other packages (torch, polars, …) are listed in ``nitpick_ignore_regex`` below instead of resolved.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

project = "trajectory"
author = "the trajectory authors"
copyright = "the trajectory authors, Apache-2.0"  # Sphinx reads this name

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.autosummary"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "tutorial/*.py"]
myst_heading_anchors = 3
myst_enable_extensions = ["deflist", "dollarmath"]

html_theme = "furo"
html_title = "trajectory"
html_static_path: list[str] = []

#: One page per module (``_templates/autosummary/module.rst``: the module, every member, its sub-modules).
templates_path = ["_templates"]
autosummary_generate = True
autosummary_imported_members = False
#: ``ignore-module-all``: the package re-exports its public names in ``__all__``; documenting them there as well
#: would give every class two targets (``trajectory.Manifest`` and ``trajectory.config.Manifest``).
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
add_module_names = False

nitpicky = True
#: Names outside the package: without intersphinx (no network) they cannot resolve, and that is no error.
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|nn|polars|pl|numpy|np|transformers|huggingface_hub|matplotlib|joblib|tokenizers|dask)(\..*)?"),
    (r"py:.*", r"(pathlib|collections|typing|enum|dataclasses|concurrent|threading|io|os|json|argparse)(\..*)?"),
    (
        r"py:.*",
        r"(Path|Any|Callable|Iterable|Iterator|Sequence|Mapping|ClassVar|Literal|Protocol|TextIO|Self|Module|Tensor)",
    ),
    (r"py:.*", r"(NoneType|None|Ellipsis|optional|callable|array_like)"),
]
