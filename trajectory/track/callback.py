"""A ``transformers`` Trainer tracked live: :class:`~trajectory.track.callback.TrajectoryCallback`, a thin layer over
:class:`~trajectory.track.tracker.Tracker`.

At ``on_train_begin`` (step 0, or the step a resumed run starts from) and at every ``on_step_end`` the
tracker is handed the model in memory and ``state.global_step``.  Each measurement is passed to
``trainer.log``, the Trainer's own logging, so every ``report_to`` integration (TensorBoard, W&B, MLflow, …)
receives ``r2_lin/block_<l>`` at the measured step (TensorBoard files them as ``train/r2_lin/block_<l>``, as
it files ``train/loss``); the Trainer's own logging cadence is left as it was.  That is why the callback
is given the trainer: :meth:`TrajectoryCallback.attach` builds it and adds it in one call.

The run's seed is ``args.seed``; its recipe label (hashed into the commit, :mod:`.tracker`) is a digest of
the TrainingArguments that decide the weights (:data:`RECIPE_FIELDS`), so resuming from a Trainer
checkpoint finds the measured steps in the store and skips them.  Only the main process
(``state.is_world_process_zero``) measures and writes; a model sharded across processes (FSDP, DeepSpeed)
cannot be measured by one of them and is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from transformers import TrainerCallback

from ..config import DEFAULT_SEQ_LEN, MetricConfig
from ..errors import ConfigError
from .tracker import Tracker, TrackSpec, eval_windows

#: TrainingArguments that decide a trained weight (the rest name folders, loggers and cadences).
RECIPE_FIELDS = (
    "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
    "num_train_epochs", "max_steps", "lr_scheduler_type", "warmup_steps", "warmup_ratio",
    "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "data_seed", "optim", "bf16", "fp16",
)  # fmt: skip


def recipe(args) -> str:
    """16 hex digits of :data:`RECIPE_FIELDS` of TrainingArguments ``args``."""
    values = {name: str(getattr(args, name, None)) for name in RECIPE_FIELDS}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


class TrajectoryCallback(TrainerCallback):
    """Measure ``trainer``'s model at ``schedule``'s steps into ``store`` (module docstring).

    ``eval``: token ids, :class:`~trajectory.data.tokens.EvalTokens`, a DataSpec or a text file (tokenized with
    the trainer's tokenizer into windows of ``seq_len``).  ``schedule``: ``"dense"`` (default), ``"pythia"``,
    every ``k`` updates, or a list of steps, over ``state.max_steps``.  ``experiment`` defaults to the name of
    ``args.output_dir``; ``metric`` (a :class:`~trajectory.config.MetricConfig`) to the defaults, ``companions``
    added to it.
    """

    def __init__(
        self,
        trainer,
        *,
        store: str | Path,
        eval,
        schedule="dense",
        random_init: int = 20,
        companions=(),
        experiment: str | None = None,
        metric: MetricConfig | None = None,
        seq_len: int = DEFAULT_SEQ_LEN,
        init: str | None = None,
    ) -> None:
        if getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False):
            raise ConfigError("a model sharded by FSDP or DeepSpeed cannot be measured by one process; train without")
        self.trainer, self.store, self.eval, self.schedule = trainer, store, eval, schedule
        self.options = dict(random_init=random_init, companions=companions, seq_len=seq_len, init=init)
        self.experiment, self.metric = experiment, metric or MetricConfig()
        self.tracker = None  # a Tracker, made at on_train_begin on the main process

    @classmethod
    def attach(cls, trainer, **options):
        """A callback of ``options`` for ``trainer``, added to it: ``TrajectoryCallback.attach(trainer, store=…)``."""
        callback = cls(trainer, **options)
        trainer.add_callback(callback)
        return callback

    def _tracker(self, args, state, processing_class):
        o = self.options
        spec = TrackSpec(
            experiment=self.experiment or Path(args.output_dir).name,
            seed=int(args.seed),
            run=recipe(args),
            random_init=o["random_init"],
            init=o["init"],
            metric=MetricConfig(**{**vars(self.metric), "companions": o["companions"] or self.metric.companions}),
        )
        windows = eval_windows(self.eval, processing_class, o["seq_len"])
        return Tracker(self.store, windows, self.schedule, total_steps=state.max_steps, spec=spec, log=self._log)

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if not state.is_world_process_zero:
            return
        self.tracker = self._tracker(args, state, processing_class)
        self._control = control
        self._step(model, state)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.tracker is not None:
            self._control = control
            self._step(model, state)

    def on_train_end(self, args, state, control, **kwargs):
        if self.tracker is not None:
            self._control = control
            total = {f"cost/{k}": v for k, v in self.tracker.summary().items() if v is not None}
            self._log(total)

    def _step(self, model, state) -> None:
        seen = state.num_input_tokens_seen or None  # 0 unless args.include_num_input_tokens_seen
        self.tracker.step(model, state.global_step, seen)

    def _log(self, logs: dict) -> None:
        """``trainer.log(logs)``, keeping the flag that tells the Trainer to log its loss at this step (the
        callback handler clears it on every log)."""
        keep = self._control.should_log
        self.trainer.log(dict(logs))
        self._control.should_log = keep
