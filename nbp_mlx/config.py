"""The training configuration: design keys in YAML, mapped exactly onto mlx-lm settings.

The YAML uses the Hugging Face / PEFT vocabulary (``lora_alpha``, epochs,
``warmup_ratio``...). mlx-lm 0.32 counts differently, and the mapping below
is where the two meet:

* LoRA ``scale`` is ``lora_alpha / lora_rank`` (mlx-lm takes a scale, default 20).
* LoRA goes into every transformer layer (mlx-lm's ``num_layers`` defaults to the last 16).
* mlx-lm counts iterations (micro-batches), so epochs become iterations from the
  dataset size: its batch iterator drops the last incomplete batch, and the
  count is rounded up to whole optimizer updates.
* The learning-rate schedule counts optimizer updates, so warmup and cosine
  decay are sized in updates, not iterations.
* Prompt tokens are masked from the loss (mlx-lm's ``mask_prompt`` defaults off).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .i18n import _

# Design target names and where mlx-lm's Qwen2/Llama layers keep them.
TARGET_MODULES = {
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "o_proj": "self_attn.o_proj",
    "gate_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "down_proj": "mlp.down_proj",
}
SCHEDULERS = ("cosine", "linear", "constant")


@dataclass
class TrainConfig:
    """Training settings, with the design's key names; every key may appear in the YAML."""

    model_name_or_path: str = "bundled"
    dataset_dir: str = "data/dataset"
    output_dir: str = "adapters"
    run_name: str | None = None
    lora_rank: int = 16
    lora_alpha: float = 32
    lora_dropout: float = 0.05
    lora_target: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    lora_layers: int | str = "all"
    num_train_epochs: float = 3
    max_steps: int | None = None
    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 4
    learning_rate: float = 2.0e-4
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_seq_length: int = 2048
    mask_prompt: bool = True
    seed: int = 42
    logging_steps: int = 10
    eval_steps: int = 50
    save_steps: int = 50
    val_batches: int = -1
    grad_checkpoint: bool = False
    source_path: str | None = field(default=None, repr=False)

    @property
    def targets(self) -> list[str]:
        return [name.strip() for name in self.lora_target.split(",") if name.strip()]

    @property
    def lora_scale(self) -> float:
        return self.lora_alpha / self.lora_rank

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source_path")
        return data


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Load and validate a YAML training config; ``overrides`` replace keys after loading."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(_("{path}: config file not found; pass --config with the path of a YAML file").format(path=path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(_("{path}: invalid YAML: {error}").format(path=path, error=error)) from error
    if not isinstance(raw, dict):
        raise ConfigError(_("{path}: expected a mapping of keys to values at the top level").format(path=path))
    raw.update({key: value for key, value in (overrides or {}).items() if value is not None})
    return config_from_dict(raw, source=str(path))


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> TrainConfig:
    known = {f.name: f for f in fields(TrainConfig) if f.name != "source_path"}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(
            _("{source}: unknown key(s) {keys}; valid keys are: {valid}").format(
                source=source, keys=", ".join(unknown), valid=", ".join(known)
            )
        )
    values: dict[str, Any] = {}
    for key, value in raw.items():
        values[key] = _coerce(source, key, value, known[key].type)
    config = TrainConfig(**values, source_path=source)
    validate(config, source)
    return config


def _coerce(source: str, key: str, value: Any, type_name: Any) -> Any:
    type_text = str(type_name)
    if value is None:
        if "None" in type_text:
            return None
        raise ConfigError(_("{source}: key '{key}' must have a value").format(source=source, key=key))
    try:
        if type_text.startswith("int | str"):
            return value if isinstance(value, str) else int(value)
        if type_text.startswith("int"):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(value)
        if type_text.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if type_text.startswith("bool"):
            if not isinstance(value, bool):
                raise ValueError
            return value
        if type_text.startswith("str"):
            if isinstance(value, (list, tuple)) and key == "lora_target":
                return ",".join(str(item) for item in value)
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            _("{source}: key '{key}' has invalid value {value!r}; expected {expected}").format(
                source=source, key=key, value=value, expected=type_text
            )
        ) from None
    return value


def validate(config: TrainConfig, source: str) -> None:
    def fail(key: str, requirement: str) -> None:
        raise ConfigError(
            _("{source}: key '{key}' = {value!r} is invalid: {requirement}").format(
                source=source, key=key, value=getattr(config, key), requirement=requirement
            )
        )

    if config.lora_rank < 1:
        fail("lora_rank", _("must be a positive integer"))
    if config.lora_alpha <= 0:
        fail("lora_alpha", _("must be positive"))
    if not 0 <= config.lora_dropout < 1:
        fail("lora_dropout", _("must be in [0, 1)"))
    unknown_targets = [name for name in config.targets if name not in TARGET_MODULES]
    if not config.targets or unknown_targets:
        fail("lora_target", _("use a comma-separated subset of {names}").format(names=",".join(TARGET_MODULES)))
    if config.lora_layers != "all" and (not isinstance(config.lora_layers, int) or config.lora_layers < 1):
        fail("lora_layers", _("use 'all' or a positive number of layers counted from the last one"))
    if config.num_train_epochs <= 0:
        fail("num_train_epochs", _("must be positive"))
    if config.max_steps is not None and config.max_steps < 1:
        fail("max_steps", _("must be a positive number of optimizer updates, or omitted"))
    if config.per_device_train_batch_size < 1:
        fail("per_device_train_batch_size", _("must be at least 1"))
    if config.gradient_accumulation_steps < 1:
        fail("gradient_accumulation_steps", _("must be at least 1"))
    if not 0 < config.learning_rate < 1:
        fail("learning_rate", _("must be between 0 and 1"))
    if config.lr_scheduler_type not in SCHEDULERS:
        fail("lr_scheduler_type", _("use one of: {names}").format(names=", ".join(SCHEDULERS)))
    if not 0 <= config.warmup_ratio < 1:
        fail("warmup_ratio", _("must be in [0, 1)"))
    if config.max_seq_length < 16:
        fail("max_seq_length", _("must be at least 16 tokens"))
    for key in ("logging_steps", "eval_steps", "save_steps"):
        if getattr(config, key) < 1:
            fail(key, _("must be at least 1"))


@dataclass
class MlxLmPlan:
    """The mlx-lm settings a ``TrainConfig`` resolves to for a given training-set size."""

    train_examples: int
    batch_size: int
    grad_accumulation_steps: int
    batches_per_epoch: int
    iterations: int
    optimizer_updates: int
    warmup_updates: int
    decay_updates: int
    epochs: float
    num_layers: int
    model_layers: int
    lora_parameters: dict[str, Any]
    learning_rate: float
    lr_schedule: dict[str, Any]
    mask_prompt: bool
    max_seq_length: int
    steps_per_report: int
    steps_per_eval: int
    steps_per_save: int

    def describe(self) -> list[tuple[str, str]]:
        """Return (label, value) rows for printing before training starts."""
        params = self.lora_parameters
        return [
            (_("training examples"), str(self.train_examples)),
            (_("batch size x accumulation"), f"{self.batch_size} x {self.grad_accumulation_steps}"),
            (_("batches per epoch"), str(self.batches_per_epoch)),
            (_("epochs"), f"{self.epochs:g}"),
            (_("iterations (mlx-lm iters)"), str(self.iterations)),
            (_("optimizer updates"), str(self.optimizer_updates)),
            (_("warmup / decay (updates)"), f"{self.warmup_updates} / {self.decay_updates}"),
            (_("learning rate"), f"{self.learning_rate:g} ({self.lr_schedule['name']})"),
            (_("LoRA rank / scale / dropout"), f"{params['rank']} / {params['scale']:g} / {params['dropout']:g}"),
            (_("LoRA layers"), self._layers_text()),
            (_("LoRA modules"), ", ".join(params["keys"])),
            (_("prompt masked from loss"), str(self.mask_prompt)),
            (_("max sequence length"), _("{count} tokens").format(count=self.max_seq_length)),
        ]


    def _layers_text(self) -> str:
        if self.num_layers >= self.model_layers:
            return _("all {count}").format(count=self.num_layers)
        return _("last {count} of {total}").format(count=self.num_layers, total=self.model_layers)


def plan_training(config: TrainConfig, train_examples: int, model_layers: int) -> MlxLmPlan:
    """Resolve ``config`` into mlx-lm iterations, schedule and LoRA parameters."""
    batch = config.per_device_train_batch_size
    accumulation = config.gradient_accumulation_steps
    # mlx-lm's iterate_batches drops the incomplete last batch of each pass.
    batches_per_epoch = train_examples // batch
    if batches_per_epoch < 1:
        raise ConfigError(
            _("the training set has {count} example(s), fewer than one batch of {batch}; add data or lower per_device_train_batch_size").format(
                count=train_examples, batch=batch
            )
        )
    if config.max_steps is not None:
        updates = config.max_steps
    else:
        updates = math.ceil(config.num_train_epochs * batches_per_epoch / accumulation)
    iterations = updates * accumulation
    epochs = iterations / batches_per_epoch

    warmup = round(config.warmup_ratio * updates)
    decay = max(updates - warmup, 1)
    schedule: dict[str, Any]
    if config.lr_scheduler_type == "cosine":
        schedule = {"name": "cosine_decay", "arguments": [config.learning_rate, decay, 0.0]}
    elif config.lr_scheduler_type == "linear":
        schedule = {"name": "linear_schedule", "arguments": [config.learning_rate, 0.0, decay]}
    else:
        schedule = {"name": "linear_schedule", "arguments": [config.learning_rate, config.learning_rate, 1]}
    if warmup:
        schedule["warmup"] = warmup
        schedule["warmup_init"] = 0.0

    num_layers = model_layers if config.lora_layers == "all" else min(int(config.lora_layers), model_layers)
    return MlxLmPlan(
        train_examples=train_examples,
        batch_size=batch,
        grad_accumulation_steps=accumulation,
        batches_per_epoch=batches_per_epoch,
        iterations=iterations,
        optimizer_updates=updates,
        warmup_updates=warmup,
        decay_updates=decay,
        epochs=epochs,
        num_layers=num_layers,
        model_layers=model_layers,
        lora_parameters={
            "rank": config.lora_rank,
            "scale": config.lora_scale,
            "dropout": config.lora_dropout,
            "keys": [TARGET_MODULES[name] for name in config.targets],
        },
        learning_rate=config.learning_rate,
        lr_schedule=schedule,
        mask_prompt=config.mask_prompt,
        max_seq_length=config.max_seq_length,
        steps_per_report=config.logging_steps,
        steps_per_eval=config.eval_steps * accumulation,
        steps_per_save=config.save_steps * accumulation,
    )
