"""``python -m nbp_mlx quickstart``: sample data -> short LoRA run -> streamed prompts, offline."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from .cli_progress import CliTrainingObserver, RichProgress, print_rows, stderr_console, write_stdout
from .config import load_config, plan_training
from .dataset import prepare_dataset
from .errors import NbpError
from .generate import GenerationSettings, GenerationStats, stream_generate
from .i18n import _
from .models.loading import device_label, load_model
from .models.resolve import resolve_model
from .paths import REPO_DIR

SAMPLE_DATA = REPO_DIR / "data" / "sample_prompts.jsonl"
QUICKSTART_CONFIG = REPO_DIR / "configs" / "quickstart.yaml"
DESCRIPTION = "霓虹街头的赛博朋克女孩"
DEFAULT_MAX_TOKENS = 400


def run_quickstart(work_dir: Path, max_steps: int | None = None, max_tokens: int | None = None, model: str = "bundled") -> int:
    from mlx_lm.utils import load_tokenizer

    from .data.importer import import_prompts, write_records
    from .train import train

    started = time.perf_counter()
    progress = RichProgress()
    console = stderr_console
    for required in (SAMPLE_DATA, QUICKSTART_CONFIG):
        if not required.is_file():
            raise NbpError(_("{path} not found; quickstart runs from a source checkout of nbp-mlx").format(path=required))

    step = _step_printer(console)
    if model == "bundled":
        step(_("Loading the bundled model (the first run imports the GGUF into MLX, about a minute)"))
    else:
        step(_("Loading the model {model}").format(model=model))
    resolved = resolve_model(model, progress)
    console.print(_("model folder: {path} ({device})").format(path=resolved.path, device=device_label()), style="dim")

    step(_("Importing the sample prompts"))
    records_path = work_dir / "prompts.jsonl"
    result = import_prompts(SAMPLE_DATA)
    write_records(records_path, result.records)
    console.print(_("{count} prompts ({json} JSON, {text} text) -> {path}").format(count=len(result.records), json=result.json_count, text=result.text_count, path=records_path))

    step(_("Preparing the dataset"))
    overrides = {
        "dataset_dir": str(work_dir / "dataset"),
        "output_dir": str(work_dir / "adapters"),
        "max_steps": max_steps,
        "model_name_or_path": model,
    }
    config = load_config(QUICKSTART_CONFIG, overrides)
    tokenizer = load_tokenizer(resolved.path)
    report = prepare_dataset(records_path, config.dataset_dir, tokenizer, max_seq_length=config.max_seq_length,
                             batch_size=config.per_device_train_batch_size, progress=progress)
    console.print(_("{train} train pairs, {valid} valid pairs, {excluded} excluded as too long").format(
        train=report.train_pairs, valid=report.valid_pairs, excluded=len(report.excluded_too_long)))

    step(_("Training a short LoRA run"))
    plan = plan_training(config, report.train_pairs, _layer_count(resolved.path))
    print_rows(plan.describe(), _("mlx-lm settings"))
    run_dir = Path(config.output_dir) / (config.run_name or "quickstart")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    result_train = train(config, run_dir=run_dir, observer=CliTrainingObserver(), progress=progress, handle_sigint=True)

    step(_("Generating with the fine-tuned adapter"))
    loaded = load_model(resolved, adapter=result_train.run_dir)
    # A short run on a 0.5B model falls into loops easily; a mild penalty keeps the demo readable.
    settings = GenerationSettings(max_tokens=max_tokens or DEFAULT_MAX_TOKENS, seed=0, repetition_penalty=1.15)
    for prompt_format in ("text", "json"):
        console.print(_("{description}  [{format}]").format(description=DESCRIPTION, format=prompt_format), style="bold", markup=False)
        stats = GenerationStats()
        for chunk in stream_generate(loaded, DESCRIPTION, prompt_format, settings, stats):
            write_stdout(chunk)
        write_stdout("\n")
        from .cli import _print_generation_stats
        from .generate import describe_json_method

        _print_generation_stats(stats, console)
        if prompt_format == "json":
            console.print(describe_json_method(stats), markup=False, highlight=False)

    minutes = (time.perf_counter() - started) / 60
    console.print(_("Quickstart finished in {minutes:.1f} minutes.").format(minutes=minutes), style="bold green")
    console.print(_("Artifacts: dataset {dataset}, adapter {adapter}").format(dataset=config.dataset_dir, adapter=result_train.run_dir))
    console.print(_("Next, on your own data:"))
    for line in (
        "python -m nbp_mlx data import my_prompts.jsonl -o data/prompts.jsonl",
        "python -m nbp_mlx data describe --input data/prompts.jsonl --output data/described.jsonl",
        "python -m nbp_mlx data augment --input data/described.jsonl --output data/augmented.jsonl",
        "python -m nbp_mlx data prepare --input data/augmented.jsonl --config configs/train_config.yaml",
        "python -m nbp_mlx train --config configs/train_config.yaml",
        "python -m nbp_mlx generate \"霓虹街头的赛博朋克女孩\" --adapter adapters/<run>",
    ):
        console.print(f"  {line}")
    return 0


def _step_printer(console):
    counter = {"n": 0}

    def step(text: str) -> None:
        counter["n"] += 1
        console.rule(f"[bold]{counter['n']}. {text}")

    return step


def _layer_count(model_path: Path) -> int:
    return int(json.loads((model_path / "config.json").read_text())["num_hidden_layers"])


