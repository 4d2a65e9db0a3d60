"""A compressed model as a folder, and loading it back: data only, every file checked against its sha256::

    DIR/base/               the intact base model: config.json, model.safetensors (and its tokenizer, if given)
    DIR/maps.safetensors    the chosen maps' tensors, ``block<l>.<name>`` (name: bias, w, u, v; float64)
    DIR/compression.json    the plan, each map's provenance, the measured losses, and ``files``: the sha256
                            of every other file in the folder

:func:`load_compressed` reads JSON and safetensors only: the base model is loaded with
``trust_remote_code=False`` through :func:`trajectory.sources.loading.load_model`, each chosen FFN is then
replaced in memory by an :class:`~trajectory.engine.ablation.FFNMap` (:meth:`.Adapter.replace_ffn`), and the
result is a standard ``transformers`` model.  Nothing in the folder is executed.  A folder whose files do not
match the recorded sha256 values, or that holds a file the record does not list, is refused in one line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_dir
from ..engine.ablation import as_module
from ..errors import ConfigError, LoadError

RECORD = "compression.json"
MAPS = "maps.safetensors"
BASE = "base"
FORMAT = 1


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != RECORD)


def map_tensors(choices) -> dict[str, torch.Tensor]:
    """``block<l>.<name>`` → float64 tensor, for every chosen map."""
    return {
        f"block{c.block}.{name}": torch.from_numpy(np.ascontiguousarray(t, dtype=np.float64))
        for c in choices
        for name, t in c.tensors.items()
    }


def check_out(out: str | Path) -> Path:
    """``out`` must not exist yet: a compressed folder is written whole, never over something else."""
    path = Path(out)
    if path.exists():
        raise ConfigError(f"--out {out} already exists; give a new folder (nothing is written over an existing one)")
    return path


def write_compressed(out: str | Path, model, choices, record: dict, tokenizer=None) -> Path:
    """Write the folder of the module docstring atomically; ``record`` gets ``format`` and ``files``."""
    from safetensors.torch import save_file

    def build(tmp: Path) -> None:
        model.save_pretrained(tmp / BASE, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / BASE)
        save_file(map_tensors(choices), str(tmp / MAPS), metadata={"format": "trajectory-ffn-maps"})
        files = {rel: sha256(tmp / rel) for rel in _files(tmp)}
        text = json.dumps(jsonable({"format": FORMAT, **record, "files": files}), indent=1, allow_nan=False)
        (tmp / RECORD).write_text(text)

    return atomic_dir(check_out(out), build)


def jsonable(value):
    """``value`` with every non-finite float as None (NaN is not JSON: an encoder has no loss)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def read_record(path: str | Path) -> dict:
    """The folder's ``compression.json``, after every file has been checked against it (one-line errors)."""
    root = Path(path)
    try:
        record = json.loads((root / RECORD).read_text())
    except (OSError, ValueError) as exc:
        raise LoadError(
            f"{root} is not a compressed model folder: cannot read {RECORD} ({exc.__class__.__name__})"
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("files"), dict):
        raise LoadError(f"{root}/{RECORD} is not a format-{FORMAT} compression record; write it again with --out")
    listed = record["files"]
    for rel in _files(root):
        if rel not in listed:
            raise LoadError(f"compressed folder {root} holds {rel}, which {RECORD} does not list; refusing to load it")
    for rel, want in listed.items():
        if not (root / rel).is_file() or sha256(root / rel) != want:
            raise LoadError(
                f"compressed folder {root}: {rel} does not match the sha256 in {RECORD} (changed, damaged or "
                "missing); write the folder again with trajectory compress --out"
            )
    return record


def load_compressed(path: str | Path, device: str = "cpu"):
    """The base model with the recorded FFNs replaced in memory (module docstring), in eval mode."""
    from safetensors.torch import load_file

    from ..sources.loading import load_model

    root = Path(path)
    record = read_record(root)
    model, adapter = load_model(str(root / BASE), device=device, with_head=bool(record["causal"]))
    tensors = load_file(str(root / MAPS))
    blocks = adapter.blocks(model)
    for step in record["plan"]:
        i = int(step["block"])
        mine = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.split(".", 1)[0] == f"block{i}"}
        adapter.replace_ffn(blocks[i], as_module({k: v.numpy() for k, v in mine.items()}, blocks[i]))
    return model.eval()
