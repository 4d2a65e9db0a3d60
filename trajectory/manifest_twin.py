"""``[twin]`` and what hangs off it: ``[twin.variants.NAME]`` and ``[twin.perturbation]``.

``[twin]`` holds the training settings (:class:`~trajectory.config.TwinSpec`; ``seed = N`` is short for
``seeds = [N]``; ``regulariser = { kind = "cosine", weight = λ }``).  Each ``[twin.variants.NAME]`` table
overrides any of those fields (``train_data``, ``lr``, ``steps``, ``weight_decay``, ``seeds``, ``regulariser``,
…) and is validated as a whole ``[twin]`` table would be: a variant is a twin spec like any other, run, resumed
and stored by the same machinery under the arm ``twin:NAME``.  ``[twin.perturbation]``
(:class:`~trajectory.variants.PerturbationSpec`) asks for the perturbation null of one plain-twin seed.
"""

from __future__ import annotations

import re
from dataclasses import fields, replace
from typing import Any

from .config import PERTURBATION, PerturbationSpec, Regulariser, TwinSpec
from .errors import ConfigError, ManifestError

#: A variant's name: it becomes the arm ``twin:NAME`` and a label.
VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
SPEC_FIELDS = {f.name for f in fields(TwinSpec)}


def _regulariser(r, section: str, value: Any) -> Regulariser:
    if not isinstance(value, dict) or set(value) - {"kind", "weight"}:
        raise r.fail(section, "regulariser", 'a table { kind = "cosine", weight = λ }', value)
    try:
        return Regulariser(**value)
    except (ConfigError, TypeError) as exc:
        raise ManifestError(f"manifest {r.path.name}: [{section}] {str(exc).removeprefix('[twin] ')}") from None


def _spec(r, section: str, tab: dict) -> TwinSpec:
    """One twin spec from a ``[twin]``-shaped table (seed/seeds and regulariser handled here)."""
    from .manifest import _seed_list

    tab = dict(tab)
    if "seed" in tab and "seeds" in tab:
        raise r.fail(section, "seed", "absent when 'seeds' is given", tab["seed"])
    key = "seed" if "seed" in tab else "seeds"
    if "seed" in tab:
        tab["seeds"] = [tab.pop("seed")]
    if "seeds" in tab:
        tab["seeds"] = _seed_list(r, section, tab["seeds"], count_ok=False, key=key)
        if not tab["seeds"]:
            raise r.fail(section, "seeds", "a non-empty list", [])
    reg = tab.pop("regulariser", None)
    spec = r.typed(TwinSpec, {section: tab}, section)
    if reg is None:
        return spec
    return replace(spec, regulariser=_regulariser(r, section, reg))


def twin_tables(
    r, doc: dict, arms: tuple[str, ...]
) -> tuple[TwinSpec | None, tuple[tuple[str, TwinSpec], ...], PerturbationSpec | None]:
    """The plain twin's spec, its variants (name, spec) in the manifest's order, and the perturbation null."""
    if "twin" not in doc and "twin" not in arms:
        return None, (), None
    tab = dict(r.table(doc, "twin", SPEC_FIELDS | {"seed", "variants", "perturbation"}))
    variants_tab, perturb_tab = tab.pop("variants", {}), tab.pop("perturbation", None)
    base = _spec(r, "twin", tab)
    if not isinstance(variants_tab, dict):
        raise r.fail("twin", "variants", "tables [twin.variants.NAME]", variants_tab)
    variants = []
    for name, over in variants_tab.items():
        section = f"twin.variants.{name}"
        if not VARIANT_NAME.fullmatch(name) or name == PERTURBATION:
            raise r.fail(section, "", f"named by letters, digits, '_' or '-' (not {PERTURBATION!r})", name)
        over = r.table({section: over}, section, SPEC_FIELDS | {"seed"})
        merged = {k: v for k, v in tab.items() if not ({"seed", "seeds"} & set(over) and k in ("seed", "seeds"))}
        variants.append((name, _spec(r, section, {**merged, **over})))
    return base, tuple(variants), _perturbation(r, perturb_tab, base)


def _perturbation(r, tab: Any, base: TwinSpec) -> PerturbationSpec | None:
    if tab is None:
        return None
    spec = r.typed(PerturbationSpec, {"twin.perturbation": tab}, "twin.perturbation")
    if spec.seed not in base.seeds:
        raise r.fail("twin.perturbation", "seed", f"one of [twin] seeds {list(base.seeds)}", spec.seed)
    return spec
