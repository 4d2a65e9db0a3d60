"""From measurement to a smaller model: per-block ablations, a joint plan under a loss budget, and a folder
that reloads as a standard ``transformers`` model with the chosen FFNs replaced (docs/compress.md).

* :mod:`.spec`      the settings (:class:`.CompressConfig`);
* :mod:`.fitting`   the train/held-out split and each block's moments, on the intact or a patched model;
* :mod:`.ablations` every block × every ablation alone: held-out cost, what it saves, R²_lin beside it;
* :mod:`.plan`      the greedy joint plan, re-measured and re-fitted after every choice;
* :mod:`.folder`    writing a compressed folder and loading it back, sha256-checked;
* :mod:`.table`     the readable tables.

The maths of the maps and of the counting lives in :mod:`trajectory.engine.ablation`, the held-out cost and
its interval in :mod:`trajectory.engine.replaced`.
"""
