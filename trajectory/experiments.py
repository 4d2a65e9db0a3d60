"""Several experiments read together, and the checks that they can be compared (for :mod:`.multireport`).

``trajectory report A.toml B.toml …`` reads each manifest's experiment as the single report does (its store,
its discovered schedule, one evaluation, one init), and holds every one to the first:

* **the same architecture**: when both model configs can be read with no network (an inline config, a local
  folder, a Hub repo's ``config.json`` in the HF cache at a stored commit), every field but those naming where
  or how it was saved (:data:`NOT_ARCHITECTURE`); else, when both stores hold random-init draws, the config
  hash their commits name (``init:…/config:<hash>``); and always the number of FFN blocks in the rows;
* **the same evaluation**: ``data_hash`` (the windows) and the R²_lin config (``metric_core``: the metric's
  settings but its companions);
* the same band coverage, the same ``[random_init] init`` where named, and trained arms whose steps can be
  matched (hub and local count optimizer steps; a twin counts its own updates);
* no checkpoint in two experiments (one weights hash after step 0): the same run twice is not two runs.

A difference is one line naming the manifest and how it differs.  The runs are, per experiment, its first
trained arm (hub, local, twin) and each of its seeds; steps are matched by step number.  The numbers are
:func:`trajectory.verdicts.compare_runs`; the page is :mod:`trajectory.multireport`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import polars as pl

from . import verdicts
from .config import Arm, Manifest
from .errors import ConfigError
from .report import read_experiment
from .verdicts.frame import BAND_ARM, init_of

#: Config fields that say where, how or in which dtype a config was saved, how the model is called, or which
#: tokens are special: none changes what an FFN block computes from its input.
NOT_ARCHITECTURE = frozenset(
    {
        "transformers_version", "_name_or_path", "_commit_hash", "_attn_implementation_autoset", "architectures",
        "torch_dtype", "dtype", "use_cache", "return_dict", "output_hidden_states", "output_attentions",
        "torchscript", "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id",
        "id2label", "label2id", "problem_type", "finetuning_task", "task_specific_params", "tokenizer_class", "prefix",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Experiment:
    """One manifest's experiment as compared: its rows (one evaluation, one init), its runs, and the evidence
    of its architecture: ``blocks`` in its rows, ``init_configs`` its random-init draws name, and ``config``
    (minus :data:`NOT_ARCHITECTURE`) where it can be read offline."""

    manifest: Manifest
    frame: pl.DataFrame
    ignored: pl.DataFrame
    arm: str
    runs: tuple[verdicts.Run, ...]
    blocks: int
    init_configs: frozenset[str]
    config: dict | None

    @property
    def file(self) -> str:
        return self.manifest.source.name

    @property
    def evaluation(self) -> tuple[str, str]:
        """``(data_hash, R²_lin config)``: the config is ``metric_core``, the digest without companions, which
        every unit of one evaluation shares (:func:`~trajectory.verdicts.one_evaluation`); ``metric_config``
        differs between units measured with and without companions (``companion_points``)."""
        row = self.frame.row(0, named=True)
        return row["data_hash"], row.get("metric_core") or row["metric_config"]

    def evidence(self) -> str:
        """How this experiment's architecture was compared (for the provenance section)."""
        parts = [f"{self.blocks} blocks in its rows"]
        if self.config is not None:
            parts.insert(0, f"model config {self.config.get('model_type')} (read offline)")
        if self.init_configs:
            parts.insert(0, f"random-init draws of {', '.join(sorted(self.init_configs))}")
        return "; ".join(parts)


def _config_of(manifest, frame: pl.DataFrame, arm: str) -> dict | None:
    """The model config readable offline (at the last stored commit of ``arm``), as a dict, or None."""
    from .sources.resolve import offline_architecture

    rows = frame.filter(pl.col("arm") == arm).sort("step")
    commit = rows["commit"][-1] if len(rows) and arm != str(Arm.TWIN) else None
    config = offline_architecture(manifest, commit if arm == str(Arm.HUB) else None)
    if config is None:
        return None
    return {k: v for k, v in config.to_dict().items() if k not in NOT_ARCHITECTURE}


def read_one(manifest, data_hash: str | None, metric: str) -> Experiment:
    """``manifest``'s experiment: its rows as the single report reads them, and its runs."""
    from .store import with_discovered_schedule

    manifest = with_discovered_schedule(manifest)
    frame, ignored, _ = read_experiment(manifest, data_hash)
    arms = verdicts.trained_arms(frame, metric)
    if not arms:
        raise ConfigError(
            f"manifest {manifest.source.name}: experiment '{manifest.name}' has no usable trained rows (hub, local "
            f"or twin) for `{metric}`; run `trajectory sweep {manifest.source}` first"
        )
    arm = arms[0]
    seeds = sorted(set(verdicts.usable(frame.filter(pl.col("arm") == arm), metric)["seed"].fill_null(0).to_list()))
    total = manifest.total_steps().get(arm)
    runs = tuple(
        verdicts.Run(manifest.name if len(seeds) == 1 else f"{manifest.name} seed {s}", manifest.name, arm, s, total)
        for s in seeds
    )
    commits = frame.filter(pl.col("arm") == BAND_ARM)["commit"].to_list()
    return Experiment(
        manifest=manifest,
        frame=frame,
        ignored=ignored,
        arm=arm,
        runs=runs,
        blocks=frame["block"].n_unique(),
        init_configs=frozenset(c.split("/", 1)[1] for c in commits if init_of(c) and "/" in c),
        config=_config_of(manifest, frame, arm),
    )


def architecture_difference(a: Experiment, b: Experiment) -> str | None:
    """How ``b``'s architecture differs from ``a``'s, by the best evidence both have (module docstring)."""
    if a.config is not None and b.config is not None:
        fields = sorted(k for k in a.config.keys() | b.config.keys() if a.config.get(k) != b.config.get(k))
        if fields:
            shown = ", ".join(f"{k} {b.config.get(k)!r} vs {a.config.get(k)!r}" for k in fields[:3])
            return f"its model config differs in {len(fields)} field(s): {shown}"
    elif a.init_configs and b.init_configs and a.init_configs != b.init_configs:
        return (
            f"its random-init draws are of {', '.join(sorted(b.init_configs))}, "
            f"not {', '.join(sorted(a.init_configs))} (another architecture)"
        )
    if a.blocks != b.blocks:
        return f"its rows have {b.blocks} FFN blocks, not {a.blocks}"
    return None


def difference(a: Experiment, b: Experiment) -> str | None:
    """Why ``b`` cannot be compared with ``a`` (one clause), or None."""
    arch = architecture_difference(a, b)
    if arch:
        return f"another architecture: {arch}"
    (ha, ma), (hb, mb) = a.evaluation, b.evaluation
    if hb != ha:
        return f"other evaluation data: data_hash {hb} vs {ha} (the [data] windows differ)"
    if mb != ma:
        return f"another metric config: {mb} vs {ma} (the [metric] settings differ)"
    if b.manifest.band_coverage != a.manifest.band_coverage:
        return f"another band coverage: {b.manifest.band_coverage:g} vs {a.manifest.band_coverage:g} ([random_init])"
    if a.manifest.init_scheme and b.manifest.init_scheme and a.manifest.init_scheme != b.manifest.init_scheme:
        return f"another random init: {b.manifest.init_scheme} vs {a.manifest.init_scheme} ([random_init] init)"
    if (a.arm == str(Arm.TWIN)) != (b.arm == str(Arm.TWIN)):
        return (
            f"its runs are {b.arm} runs, the others {a.arm}: a twin's steps count its own updates, so steps "
            "cannot be matched by number"
        )
    return None


@dataclass(frozen=True)
class Experiments:
    """The experiments compared (the first is the reference of every check) and their pooled rows."""

    items: tuple[Experiment, ...]
    frame: pl.DataFrame
    set_aside_inits: tuple[str, ...]
    metric: str

    @property
    def runs(self) -> list[verdicts.Run]:
        return [run for e in self.items for run in e.runs]

    @property
    def coverage(self) -> float:
        return self.items[0].manifest.band_coverage

    @property
    def names(self) -> list[str]:
        return [e.manifest.name for e in self.items]


def read_experiments(manifests: list, data_hash: str | None = None, metric: str = "r2_lin") -> Experiments:
    """Read every manifest's experiment and check that they can be compared (module docstring); a
    :class:`~trajectory.errors.ConfigError` naming the manifest that differs, and how, otherwise."""
    if len(manifests) < 2:
        raise ConfigError(f"comparing experiments needs at least 2 manifests, got {len(manifests)}")
    seen: dict[str, str] = {}
    for m in manifests:
        if m.name in seen:
            raise ConfigError(f"manifests {seen[m.name]} and {m.source.name} both name experiment '{m.name}'")
        seen[m.name] = m.source.name
    items = [read_one(m, data_hash, metric) for m in manifests]
    for other in items[1:]:
        why = difference(items[0], other)
        if why:
            raise ConfigError(f"manifest {other.file} cannot be compared with {items[0].file}: {why}")
    twice = shared_checkpoint(items)
    if twice:
        raise ConfigError(twice)
    pool = pl.concat([e.frame.filter(pl.col("arm").is_in([BAND_ARM, e.arm])) for e in items], how="vertical")
    scheme = next((e.manifest.init_scheme for e in items if e.manifest.init_scheme), None)
    pool, other_inits = verdicts.one_init(pool, scheme)
    return Experiments(tuple(items), pool, tuple(other_inits), metric)


def shared_checkpoint(items: list[Experiment]) -> str | None:
    """Two experiments whose runs store one checkpoint (the same weights hash after step 0): one run counted
    twice would narrow the trained band.  Step 0 is left out: two runs may start from one init."""
    seen: dict[str, tuple[Experiment, int]] = {}
    for e in items:
        rows = e.frame.filter((pl.col("arm") == e.arm) & (pl.col("step") > 0)).drop_nulls("weights_hash")
        for step, weights in rows.select("step", "weights_hash").unique().sort("step").iter_rows():
            first, at = seen.setdefault(weights, (e, step))
            if first is not e:
                return (
                    f"manifest {e.file} cannot be compared with {first.file}: both store one checkpoint (weights "
                    f"hash {weights}, at step {at} and {step}); one run counted twice would narrow the trained band"
                )
    return None


def compare(exps: Experiments) -> verdicts.Comparison:
    """The numbers: :func:`trajectory.verdicts.compare_runs` on the experiments' runs."""
    return verdicts.compare_runs(exps.frame, exps.runs, exps.metric, exps.coverage)


def default_name(names: list[str]) -> str:
    """A folder name for the experiments: their names joined by ``+`` when that is short, else the first
    name (cut to 40 characters), how many more, and 6 hex digits of them all, so two different sets never
    share a folder: also when a name holds a ``+`` (``p+q``, ``r`` and ``p``, ``q+r`` would both join to ``p+q+r``)."""
    joined = "+".join(names)
    if len(joined) <= 60 and not any("+" in n for n in names):
        return joined
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:6]
    return f"{names[0][:40]}+{len(names) - 1}-more-{digest}"


def experiments_json(exps: Experiments) -> list[dict]:
    """Each experiment: its manifest, store, model, arm, evaluation and architecture evidence."""
    return [
        {
            "experiment": e.manifest.name,
            "manifest": str(e.manifest.source),
            "store": str(e.manifest.store_dir),
            "model": e.manifest.repo or "inline config",
            "arm": e.arm,
            "data_hash": e.evaluation[0],
            "metric_config": e.evaluation[1],
            "architecture": e.evidence(),
        }
        for e in exps.items
    ]


def set_aside_sentences(exps: Experiments) -> list[str]:
    """What the comparison leaves out: other trained arms, other evaluations and other inits."""
    out = []
    for e in exps.items:
        others = [a for a in verdicts.trained_arms(e.frame, exps.metric) if a != e.arm]
        if others:
            out.append(f"{e.manifest.name}: its {', '.join(others)} arm(s) are not runs here (only its {e.arm} arm).")
        for r in e.ignored.iter_rows(named=True):
            what = f"drawn with init `{r['init']}`" if r.get("init") else f"of another evaluation ({r['data_hash']})"
            out.append(f"{e.manifest.name}: {r['rows']} rows {what} set aside.")
    out += [f"Random-init draws of init `{i}` set aside: the band uses one init." for i in exps.set_aside_inits]
    return out
