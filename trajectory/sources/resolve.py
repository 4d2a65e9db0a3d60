"""What a manifest's model is: its checkpoint source, its architecture and its tokenizer.

* :func:`make_source`: the hub or local source of a trained arm (a ``repo`` that is a folder on disk is
  a local source whatever the arm says);
* :func:`architecture`: the model config, from the manifest's inline ``[model.config]`` table or read
  from the repo (for a local folder of checkpoints, from its first scheduled revision on disk);
* :func:`manifest_tokenizer`: ``[model] tokenizer`` (a Hub id, a folder or ``embedded:VOCAB``), else the
  repo's own;
* :func:`offline_architecture`: the model config where it can be read with no network, or None (for
  comparing the architectures of several experiments' stores).
"""

from __future__ import annotations

from pathlib import Path

from ..config import Arm, Manifest, natural_key
from ..errors import ConfigError, ManifestError
from .local import LocalDirSource


def make_source(manifest: Manifest, arm: str, *, offline: bool | None = None, keep_weights: bool = False, retry=None):
    """The checkpoint source of ``arm`` (``hub`` or ``local``); ``offline=True`` never contacts the Hub."""
    from .hub import HubSource, RetryPolicy

    if not manifest.repo:
        raise ManifestError(f"manifest {manifest.source.name}: arm {arm!r} needs [model] repo or path")
    if arm == Arm.LOCAL or Path(manifest.repo).is_dir():
        return LocalDirSource(Path(manifest.repo), arm=str(arm))
    rule = manifest.schedule.rule
    if rule is not None and rule.rule == "repos":
        from .repos import RepoSetSource

        return RepoSetSource(manifest.repo, offline=offline, keep_weights=keep_weights, retry=retry or RetryPolicy())
    return HubSource(manifest.repo, offline=offline, keep_weights=keep_weights, retry=retry or RetryPolicy())


def reference_revision(manifest: Manifest) -> tuple[str, str | None]:
    """Where the architecture and tokenizer are read: the repo itself, or — for a local folder of
    checkpoints, which has no config of its own — its first scheduled revision that is on disk."""
    root = Path(manifest.repo)
    if not root.is_dir() or (root / "config.json").is_file():
        return manifest.repo, None
    schedule = manifest.schedule
    # a schedule still to be discovered among the folder's sub-folders: any of them has the architecture
    revisions = schedule.revisions() if schedule.resolved else sorted((p.name for p in root.iterdir()), key=natural_key)
    for rev in revisions:
        if (root / rev / "config.json").is_file():
            return manifest.repo, rev
    raise ManifestError(f"manifest {manifest.source.name}: no scheduled revision of {manifest.repo} is on disk")


def architecture(manifest: Manifest):
    """The manifest's model config: its inline ``[model.config]`` table, or the config of its repo."""
    from transformers import AutoConfig

    from .loading import load_config, quiet_transformers

    if manifest.model_config is None:
        return load_config(*reference_revision(manifest))
    quiet_transformers()
    values = dict(manifest.model_config)
    try:
        return AutoConfig.for_model(values.pop("model_type"), **values)
    except (ValueError, TypeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ManifestError(f"manifest {manifest.source.name}: [model.config] {first}") from None


def manifest_tokenizer(manifest: Manifest):
    """The manifest's tokenizer: ``[model] tokenizer``, else the repo's (see the module docstring)."""
    from .loading import load_tokenizer

    if manifest.tokenizer:
        return load_tokenizer(manifest.tokenizer)
    if manifest.repo is None:
        raise ConfigError(
            f"manifest {manifest.source.name}: [model] needs 'tokenizer' when only 'config' is given, "
            'e.g. tokenizer = "embedded:4096"'
        )
    return load_tokenizer(*reference_revision(manifest))


def offline_architecture(manifest: Manifest, commit: str | None = None):
    """The manifest's model config when it can be read without the network, else None: its inline config, a
    local folder's, or a Hub repo's ``config.json`` at ``commit`` (a stored row's SHA) from the HF cache."""
    from transformers import AutoConfig

    from ..errors import TrajectoryError
    from .loading import quiet_transformers

    if manifest.model_config is not None or (manifest.repo and Path(manifest.repo).is_dir()):
        try:
            return architecture(manifest)
        except TrajectoryError:
            return None  # the folder is gone, or no revision of it is on disk
    if not manifest.repo:
        return None
    quiet_transformers()
    try:
        return AutoConfig.from_pretrained(
            manifest.repo, revision=commit, local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError):
        return None
