"""LoRA fine-tuning through mlx-lm's Python API, with progress events, Ctrl-C and resume.

The training loop itself is ``mlx_lm.tuner.trainer.train``. This module
prepares its inputs from a ``TrainConfig`` (see ``config.py`` for how the
design keys map onto mlx-lm), reports progress through ``TrainingObserver``,
and saves everything a run needs to be resumed: the adapter, the optimizer
state and the iteration reached.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from .config import MlxLmPlan, TrainConfig, plan_training
from .errors import DatasetError, TrainingError
from .i18n import _
from .jsonl import append_jsonl, atomic_write_text, iter_jsonl
from .models.loading import load_model
from .models.resolve import ResolvedModel, resolve_model
from .progress import Progress

logger = logging.getLogger(__name__)

ADAPTER_FILE = "adapters.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainEvent:
    """One progress report from a training run.

    ``kind`` is "plan", "iteration", "train", "val", "save", "stopped" or "done".
    Iterations count from the start of the run, across resumes.
    """

    kind: str
    iteration: int = 0
    total_iterations: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    peak_memory_gb: float | None = None
    trained_tokens: int | None = None
    eta_seconds: float | None = None
    elapsed_seconds: float = 0.0
    path: str | None = None


class TrainingObserver:
    """Receives ``TrainEvent``s; the CLI, the TUI and tests subclass it."""

    def on_event(self, event: TrainEvent) -> None:
        pass


@dataclass
class TrainResult:
    run_dir: Path
    iterations_done: int
    total_iterations: int
    stopped_early: bool
    final_train_loss: float | None
    final_val_loss: float | None
    plan: MlxLmPlan


class StopFlag:
    """Thread-safe request to stop training at the next optimizer-update boundary."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


def load_split(path: Path) -> list[dict]:
    if not path.is_file():
        raise DatasetError(
            _("{path}: dataset file not found; run `python -m nbp_mlx data prepare` first or set dataset_dir in the config").format(path=path)
        )
    rows = [row for _line, row in iter_jsonl(path)]
    for number, row in enumerate(rows, start=1):
        if not isinstance(row.get("messages"), list):
            raise DatasetError(_("{path}:{line}: missing 'messages' list; regenerate the file with `data prepare`").format(path=path, line=number))
    return rows


def new_run_dir(config: TrainConfig) -> Path:
    name = config.run_name or datetime.now().strftime("run-%Y%m%d-%H%M%S")
    return Path(config.output_dir) / name


def train(
    config: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    observer: TrainingObserver | None = None,
    progress: Progress | None = None,
    stop: StopFlag | None = None,
    handle_sigint: bool = False,
) -> TrainResult:
    """Train a LoRA adapter as ``config`` specifies and return the result with its run folder.

    With ``resume``, ``run_dir`` must hold a run saved by an earlier call; training
    continues from the iteration it reached, with its optimizer state and
    learning-rate schedule position. ``stop`` (or Ctrl-C when ``handle_sigint``)
    ends the run at the next optimizer update and saves the adapter.
    """
    from mlx_lm.tuner import trainer as mlx_trainer
    from mlx_lm.tuner.datasets import CacheDataset, ChatDataset
    from mlx_lm.tuner.utils import build_schedule, linear_to_lora_layers

    observer = observer or TrainingObserver()
    stop = stop or StopFlag()
    run_path = Path(run_dir) if run_dir else new_run_dir(config)
    state = _read_state(run_path) if resume else None
    if resume and state is None:
        raise TrainingError(
            _("{path}: no saved run to resume ({state} is missing); start without --resume").format(path=run_path, state=STATE_FILE)
        )
    if not resume and (run_path / ADAPTER_FILE).exists():
        raise TrainingError(
            _("{path}: a run already exists here; add --resume to continue it or choose another run name").format(path=run_path)
        )

    dataset_dir = Path(config.dataset_dir)
    train_rows = load_split(dataset_dir / "train.jsonl")
    valid_rows = load_split(dataset_dir / "valid.jsonl")

    resolved = resolve_model(config.model_name_or_path, progress)
    loaded = load_model(resolved, progress=progress)
    model, tokenizer = loaded.model, loaded.tokenizer
    plan = plan_training(config, len(train_rows), len(model.layers))
    if len(valid_rows) < plan.batch_size:
        raise DatasetError(
            _("{path}: the validation split has {count} pair(s), fewer than one batch of {batch}; prepare the dataset again with more prompts").format(
                path=dataset_dir / "valid.jsonl", count=len(valid_rows), batch=plan.batch_size
            )
        )
    observer.on_event(TrainEvent("plan", total_iterations=plan.iterations))

    # LoRA layers, in every layer the plan names.
    model.freeze()
    _check_targets(model, plan)
    linear_to_lora_layers(model, plan.num_layers, plan.lora_parameters)
    run_path.mkdir(parents=True, exist_ok=True)
    adapter_config = _adapter_config(config, plan, resolved)
    atomic_write_text(run_path / "adapter_config.json", json.dumps(adapter_config, ensure_ascii=False, indent=2) + "\n")
    atomic_write_text(run_path / "resolved_config.json", json.dumps({"config": config.to_dict(), "mlx_lm": asdict(plan)}, ensure_ascii=False, indent=2) + "\n")

    done_iterations = 0
    optimizer = optim.AdamW(learning_rate=build_schedule(plan.lr_schedule), weight_decay=config.weight_decay)
    if state is not None:
        done_iterations = int(state["iteration"])
        load_adapters_into(model, run_path)
        optimizer.init(model.trainable_parameters())
        saved = mx.load(str(run_path / OPTIMIZER_FILE))
        optimizer.state = tree_unflatten(list(saved.items()))
        logger.info("Resuming %s at iteration %d of %d", run_path, done_iterations, plan.iterations)
    remaining = plan.iterations - done_iterations
    if remaining <= 0:
        raise TrainingError(_("{path}: this run already finished all {count} iterations").format(path=run_path, count=plan.iterations))

    train_set = CacheDataset(ChatDataset(train_rows, tokenizer, mask_prompt=plan.mask_prompt))
    valid_set = CacheDataset(ChatDataset(valid_rows, tokenizer, mask_prompt=plan.mask_prompt))
    args = mlx_trainer.TrainingArgs(
        batch_size=plan.batch_size,
        iters=remaining,
        val_batches=config.val_batches,
        steps_per_report=plan.steps_per_report,
        steps_per_eval=plan.steps_per_eval,
        steps_per_save=plan.steps_per_save,
        max_seq_length=plan.max_seq_length,
        adapter_file=str(run_path / ADAPTER_FILE),
        grad_checkpoint=config.grad_checkpoint,
        grad_accumulation_steps=plan.grad_accumulation_steps,
    )

    # A different seed per resume keeps the batch order from repeating exactly.
    np.random.seed(config.seed + done_iterations)
    mx.random.seed(config.seed + done_iterations)
    reporter = _Reporter(observer, run_path / METRICS_FILE, done_iterations, plan.iterations)
    batches = _stoppable_batches(mlx_trainer.iterate_batches, stop, plan.grad_accumulation_steps, reporter)

    with _sigint_sets(stop, enabled=handle_sigint), _quiet_mlx_ui(mlx_trainer, reporter):
        mlx_trainer.train(
            model=model,
            optimizer=optimizer,
            train_dataset=train_set,
            val_dataset=valid_set,
            args=args,
            iterate_batches=batches,
            training_callback=reporter,
        )

    # mlx-lm's loop ends on its iteration count without asking for another batch,
    # so only a stop request leaves the count below the planned total.
    ran = reporter.stopped_after if reporter.stopped_after is not None else remaining
    iterations_done = done_iterations + ran
    if reporter.iterations_seen < ran:
        reporter.iteration_done(ran)
    _save_resume_state(run_path, optimizer, iterations_done, plan)
    stopped_early = iterations_done < plan.iterations
    kind = "stopped" if stopped_early else "done"
    observer.on_event(
        TrainEvent(kind, iteration=iterations_done, total_iterations=plan.iterations, train_loss=reporter.last_train_loss,
                   val_loss=reporter.last_val_loss, elapsed_seconds=reporter.elapsed, path=str(run_path))
    )
    return TrainResult(run_path, iterations_done, plan.iterations, stopped_early, reporter.last_train_loss, reporter.last_val_loss, plan)


def load_adapters_into(model, run_path: Path) -> None:
    weights = mx.load(str(run_path / ADAPTER_FILE))
    model.load_weights(list(weights.items()), strict=False)


def _check_targets(model, plan: MlxLmPlan) -> None:
    names = {name for name, _module in model.layers[0].named_modules()}
    missing = [key for key in plan.lora_parameters["keys"] if key not in names]
    if missing:
        raise TrainingError(
            _("this model has no module(s) {missing} in its layers; adjust lora_target in the config").format(missing=", ".join(missing))
        )


def _adapter_config(config: TrainConfig, plan: MlxLmPlan, resolved: ResolvedModel) -> dict[str, Any]:
    # The first keys are the ones mlx_lm.tuner.utils.load_adapters reads.
    return {
        "fine_tune_type": "lora",
        "num_layers": plan.num_layers,
        "lora_parameters": plan.lora_parameters,
        "model": str(resolved.path),
        "nbp_mlx": {
            "model": config.model_name_or_path,
            "model_path": str(resolved.path),
            "model_source": resolved.source,
            "lora_alpha": config.lora_alpha,
            "max_seq_length": plan.max_seq_length,
            "mask_prompt": plan.mask_prompt,
        },
    }


def _read_state(run_path: Path) -> dict | None:
    path = run_path / STATE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _save_resume_state(run_path: Path, optimizer, iterations_done: int, plan: MlxLmPlan) -> None:
    mx.save_safetensors(str(run_path / OPTIMIZER_FILE), dict(tree_flatten(optimizer.state)))
    state = {
        "iteration": iterations_done,
        "total_iterations": plan.iterations,
        "optimizer_updates": iterations_done // plan.grad_accumulation_steps,
        "saved_at": datetime.now().isoformat(timespec="seconds"),
    }
    atomic_write_text(run_path / STATE_FILE, json.dumps(state, indent=2) + "\n")


def _stoppable_batches(iterate_batches, stop: StopFlag, accumulation: int, reporter: "_Reporter"):
    """Wrap mlx-lm's batch iterator so that training ends cleanly after a stop request.

    mlx-lm's ``train`` runs one iteration per batch and saves the adapter when the
    iterator ends, so ending the iterator at an optimizer-update boundary is a
    clean stop. Validation calls the same function without ``loop`` and is never cut.
    """

    def batches(*args, **kwargs) -> Iterator:
        looping = kwargs.get("loop", False)
        for count, batch in enumerate(iterate_batches(*args, **kwargs), start=1):
            yield batch
            if looping:
                reporter.iteration_done(count)
                if stop.is_set() and count % accumulation == 0:
                    reporter.stopped_after = count
                    return

    return batches


class _Reporter:
    """mlx-lm ``TrainingCallback`` that turns reports into ``TrainEvent``s and metrics.jsonl rows."""

    def __init__(self, observer: TrainingObserver, metrics_path: Path, offset: int, total: int):
        self.observer = observer
        self.metrics_path = metrics_path
        self.offset = offset
        self.total = total
        self.iterations_seen = 0
        self.stopped_after: int | None = None
        self.started = time.perf_counter()
        self.last_train_loss: float | None = None
        self.last_val_loss: float | None = None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def iteration_done(self, count: int) -> None:
        # Called when mlx-lm requests the next batch, that is after iteration ``count`` ran.
        self.iterations_seen = count
        iteration = self.offset + count
        rate = count / self.elapsed if self.elapsed > 0 else 0.0
        eta = (self.total - iteration) / rate if rate > 0 else None
        self.observer.on_event(TrainEvent("iteration", iteration=iteration, total_iterations=self.total, eta_seconds=eta, elapsed_seconds=self.elapsed))

    def on_train_loss_report(self, info: dict) -> None:
        iteration = self.offset + int(info["iteration"])
        self.last_train_loss = float(info["train_loss"])
        row = {
            "kind": "train",
            "iteration": iteration,
            "train_loss": self.last_train_loss,
            "learning_rate": float(info["learning_rate"]),
            "tokens_per_second": float(info["tokens_per_second"]),
            "trained_tokens": int(info["trained_tokens"]),
            "peak_memory_gb": float(info["peak_memory"]),
            "elapsed_seconds": round(self.elapsed, 3),
        }
        append_jsonl(self.metrics_path, row)
        self.observer.on_event(
            TrainEvent("train", iteration=iteration, total_iterations=self.total, train_loss=row["train_loss"],
                       learning_rate=row["learning_rate"], tokens_per_second=row["tokens_per_second"],
                       peak_memory_gb=row["peak_memory_gb"], trained_tokens=row["trained_tokens"], elapsed_seconds=self.elapsed)
        )

    def on_val_loss_report(self, info: dict) -> None:
        iteration = self.offset + int(info["iteration"])
        self.last_val_loss = float(info["val_loss"])
        append_jsonl(self.metrics_path, {"kind": "val", "iteration": iteration, "val_loss": self.last_val_loss,
                                         "val_seconds": float(info["val_time"]), "elapsed_seconds": round(self.elapsed, 3)})
        self.observer.on_event(TrainEvent("val", iteration=iteration, total_iterations=self.total, val_loss=self.last_val_loss, elapsed_seconds=self.elapsed))


class _SilentTrainUI:
    """Stands in for mlx-lm's Rich ``TrainUI``: progress goes through ``TrainEvent``s instead."""

    def __init__(self, reporter: _Reporter):
        self._reporter = reporter

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def advance(self):
        pass

    def report_train(self, *args, **kwargs):
        pass

    @contextmanager
    def val_task(self, total: int):
        yield lambda: None

    def report_val(self, *args, **kwargs):
        pass

    def report_save(self, checkpoint):
        self._reporter.observer.on_event(TrainEvent("save", path=str(checkpoint)))


@contextmanager
def _quiet_mlx_ui(mlx_trainer, reporter: _Reporter):
    # NOTE: replaces mlx_lm.tuner.trainer.TrainUI (mlx-lm 0.32), which otherwise prints
    # its own Rich progress to stdout; a newer mlx-lm may rename it.
    original = getattr(mlx_trainer, "TrainUI", None)
    mlx_trainer.TrainUI = lambda *args, **kwargs: _SilentTrainUI(reporter)
    try:
        yield
    finally:
        if original is not None:
            mlx_trainer.TrainUI = original


@contextmanager
def _sigint_sets(stop: StopFlag, enabled: bool):
    """While active, the first Ctrl-C requests a clean stop; a second one interrupts at once."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if stop.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        stop.set()
        logger.warning("Stop requested: finishing the current optimizer update and saving the adapter")

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [row for _line, row in iter_jsonl(path)]


def eta_text(seconds: float | None) -> str:
    if seconds is None or math.isinf(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"
