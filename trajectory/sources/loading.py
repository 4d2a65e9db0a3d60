"""Loading a model and its tokenizer from the Hub or a local directory, safely.

Never ``trust_remote_code``; safetensors are preferred and a ``.bin`` goes
through transformers' ``torch.load(weights_only=True)`` path (torch ≥ 2.6,
CVE-2025-32434), so a pickle that needs more than tensors is refused.  The
config is read first, so an unsupported architecture fails before any weights
are fetched.  Hub failures become one-line :class:`~trajectory.errors.TrajectoryError` messages.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from .. import names
from ..config import natural_key
from ..engine.adapters import Adapter, adapter_for
from ..errors import HubUnreachableError, LoadError, RevisionNotFoundError, TrajectoryError, exception_chain
from ..online import hub_offline
from .local import revision_dir

HUB_UNREACHABLE = (
    "the Hugging Face Hub is unreachable; to run from a populated cache set HF_HUB_OFFLINE=1, "
    "or pass a local model directory"
)


def quiet_transformers() -> None:
    """No per-file progress bars or load reports from transformers: our own bars say what runs."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def explain_load_error(exc: BaseException, name: str, revision: str | None) -> TrajectoryError:
    """Map a transformers / huggingface_hub failure to a one-line error."""
    from huggingface_hub import errors as hf_errors

    where = f"{name}@{revision}" if revision else name
    parent = Path(name).parent
    if parent != Path(".") and parent.is_dir() and not Path(name).exists():  # a local folder's sub-folder, surely
        have = sorted((p.name for p in parent.iterdir() if p.is_dir()), key=natural_key)[:8]
        return LoadError(
            f"no local directory {name} ({parent} has: {', '.join(have) or 'no sub-folders'}), and {where} "
            "could not be loaded as a Hub id either"
        )
    for e in exception_chain(exc):
        if isinstance(e, hf_errors.RevisionNotFoundError):
            return RevisionNotFoundError(f"revision {revision!r} does not exist in {name}")
        if isinstance(e, hf_errors.RepositoryNotFoundError):
            return LoadError(f"no model repo or local directory named {name!r}")
        if isinstance(e, hf_errors.LocalEntryNotFoundError | hf_errors.OfflineModeIsEnabled):
            return HubUnreachableError(
                f"{where}: no such folder, and not reachable as a Hub id "
                f"(not in the local cache, and {HUB_UNREACHABLE})"
            )
        if type(e).__name__ in {"ConnectError", "ConnectTimeout", "ConnectionError"}:
            return HubUnreachableError(HUB_UNREACHABLE)
    if "is not a valid git identifier" in str(exc):
        return RevisionNotFoundError(f"revision {revision!r} does not exist in {name}")
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    if Path(name).exists():
        return LoadError(f"cannot load a model from {name}: {first}")
    return LoadError(f"cannot load {where}: {first}")


def resolve(name: str, revision: str | None) -> tuple[str, str | None]:
    """(what to pass to ``from_pretrained``, Hub revision or None).

    A local directory with a revision is a directory of checkpoints, one
    sub-directory per revision (how the twin and users' own runs are saved).
    """
    root = Path(name)
    if not root.is_dir():  # a Hub id: the HF cache writes refs/<revision>, so neither may name a path outside it
        names.repo_id(name, "model")
        return name, revision if revision is None else names.relative_name(revision, f"revision of {name}")
    if revision is None:
        return name, None
    sub = revision_dir(root, revision)  # the sweep's own rule: a name may not leave the folder
    if not sub.is_dir():
        have = sorted((p.name for p in root.iterdir() if p.is_dir()), key=natural_key)[:8]
        raise RevisionNotFoundError(
            f"revision {revision!r} does not exist in {name} (has: {', '.join(have) or 'none'})"
        )
    return str(sub), None


def _local(path: str) -> bool:
    """Whether ``from_pretrained(path)`` must stay in the cache: a Hub id while the Hub cannot be reached
    (:func:`trajectory.online.hub_offline`: one short probe instead of the client's 25 s of retries)."""
    return not Path(path).is_dir() and hub_offline()


def load_config(name: str, revision: str | None = None):
    from transformers import AutoConfig

    quiet_transformers()
    path, rev = resolve(name, revision)
    try:
        return AutoConfig.from_pretrained(path, revision=rev, trust_remote_code=False, local_files_only=_local(path))
    except (OSError, ValueError) as exc:
        raise explain_load_error(exc, name, revision) from None


def load_model(
    name: str, revision: str | None = None, device: str = "cpu", with_head: bool = False, dtype=torch.float32
):
    """(model, adapter): the trunk (or, with ``with_head``, the LM) in eval mode."""
    from transformers import AutoModel, AutoModelForCausalLM

    adapter: Adapter = adapter_for(load_config(name, revision).model_type)
    cls = AutoModelForCausalLM if with_head else AutoModel
    path, rev = resolve(name, revision)
    try:
        model, info = cls.from_pretrained(
            path,
            revision=rev,
            trust_remote_code=False,
            local_files_only=_local(path),
            dtype=dtype,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
        )
    except pickle.UnpicklingError as exc:
        where = f"{name}@{revision}" if revision else name
        lines = [ln for ln in str(exc).splitlines() if "GLOBAL" in ln] or ["unsupported content"]
        raise LoadError(
            f"refused to load {where}: its .bin pickle needs more than tensors under "
            f"weights_only=True ({lines[0].strip()[:140]}); use a trusted checkpoint or safetensors"
        ) from None
    except (OSError, ValueError) as exc:
        raise explain_load_error(exc, name, revision) from None
    except Exception as exc:  # safetensors' SafetensorError, torch's zip reader: the weights file itself is damaged
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise LoadError(
            f"cannot read the weights of {_where(name, revision)} (truncated or damaged?): {first}"
        ) from None
    check_weights_match(info, adapter, _where(name, revision))
    return model.to(device).eval(), adapter


def _where(name: str, revision: str | None) -> str:
    return f"{name}@{revision}" if revision else name


def check_weights_match(info: dict, adapter: Adapter, where: str) -> None:
    """Refuse weights that do not fill the model the config describes (transformers would draw the rest at
    random, or stop with a multi-line report): a tensor of another shape, a tensor the model needs that the
    file lacks, or blocks in the file beyond the config's ``num_hidden_layers``.  Unexpected tensors outside
    the blocks are fine: a causal LM's head when only its trunk is loaded."""
    mismatched = sorted(info.get("mismatched_keys") or [])
    if mismatched:
        key, saved, wanted = mismatched[0]
        raise LoadError(
            f"the config of {where} does not match its weights: {key} is {tuple(saved)} in the weights but "
            f"{tuple(wanted)} in the config ({len(mismatched)} tensors differ)"
        )
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise LoadError(
            f"the weights of {where} lack {len(missing)} tensors its config needs (e.g. {missing[0]}); "
            "does config.json describe more layers, or another architecture, than the weights?"
        )
    block = re.compile(rf"(^|\.){re.escape(adapter.blocks_path)}\.\d+\.")
    extra = sorted(k for k in info.get("unexpected_keys") or [] if block.search(k))
    if extra:
        raise LoadError(
            f"the weights of {where} hold blocks its config does not have (e.g. {extra[0]}); "
            "does config.json describe fewer layers than the weights?"
        )


def load_tokenizer(name: str, revision: str | None = None):
    from transformers import AutoTokenizer

    if name.split(":", 1)[0] == "embedded":  # a BPE trained locally on the embedded corpus
        from ..data.corpus import embedded_tokenizer

        return embedded_tokenizer(name)
    path, rev = resolve(name, revision)
    try:
        return AutoTokenizer.from_pretrained(path, revision=rev, trust_remote_code=False, local_files_only=_local(path))
    except (OSError, ValueError) as exc:
        raise explain_load_error(exc, name, revision) from None
