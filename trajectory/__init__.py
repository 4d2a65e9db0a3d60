"""trajectory: is the linearity of a transformer's FFN blocks learned, or fixed by the architecture?

    import trajectory as tj
    df = tj.measure(model, tokenizer, text_file="eval.txt", n_tokens=16_384, seq_len=128)  # one row per block
    tj.results("manifests/demo.toml").filter(pl.col("block") == 3)

The names below load on first use, so ``import trajectory`` (and ``trajectory --help``) stays fast.
"""

from __future__ import annotations

import importlib

from .config import __version__

_EXPORTS = {
    "measure": "api", "measure_revision": "api", "sweep": "api", "results": "api", "verdict": "api",
    "compare": "api", "top_tokens": "api", "compress": "api_compress", "ablations": "api_compress",
    "load_compressed": "api_compress",
    "load_manifest": "manifest", "quick_manifest": "manifest",
    "Manifest": "config", "MetricConfig": "config", "DataSpec": "config", "TwinSpec": "config",
    "Schedule": "config", "Provenance": "config", "Arm": "config",
    "SweepOptions": "scheduler", "SweepReport": "scheduler",
    "Store": "store",
    "Tracker": "track", "TrackSpec": "track", "TrajectoryCallback": "track",
    "TrajectoryError": "errors", "ConfigError": "errors", "ManifestError": "errors", "DataError": "errors",
    "LoadError": "errors", "RevisionNotFoundError": "errors", "HubUnreachableError": "errors",
}  # fmt: skip
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trajectory' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
