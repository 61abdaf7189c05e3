from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from nbp_mlx import i18n
from nbp_mlx.cli import build_parser, main

COMMANDS = ("data", "train", "generate", "model", "quickstart", "tui")


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    output = capsys.readouterr().out
    for command in COMMANDS:
        assert command in output


def test_numeric_options_state_units():
    parser = build_parser()
    help_text = parser._subparsers._group_actions[0].choices["generate"].format_help()
    assert "tokens" in help_text
    train_help = parser._subparsers._group_actions[0].choices["train"].format_help()
    assert "optimizer updates" in train_help


def test_module_entry_point_runs_help():
    completed = subprocess.run([sys.executable, "-m", "nbp_mlx", "--help"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0
    assert "quickstart" in completed.stdout


def test_data_import_writes_records(tmp_path, capsys):
    source = tmp_path / "prompts.txt"
    source.write_text("描述：山间湖泊的日落\nA mountain lake at sunset, golden light.\n\nA red ceramic teapot on linen.\n", encoding="utf-8")
    output = tmp_path / "records.jsonl"
    assert main(["data", "import", str(source), "-o", str(output)]) == 0
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2
    assert rows[0]["description"] == "山间湖泊的日落"
    assert "Imported 2 prompts" in capsys.readouterr().err


def test_bad_input_exits_2_with_message(tmp_path, capsys):
    source = tmp_path / "broken.jsonl"
    source.write_text('{"prompt": "a"}\n{"prompt": "b', encoding="utf-8")
    assert main(["data", "import", str(source), "-o", str(tmp_path / "out.jsonl")]) == 2
    error = capsys.readouterr().err
    assert "broken.jsonl:2" in error
    assert "Traceback" not in error
    assert not (tmp_path / "out.jsonl").exists()


def test_generate_with_tiny_model_streams_to_stdout(tiny_model_dir, capsys):
    code = main(["generate", "霓虹街头的赛博朋克女孩", "--model", str(tiny_model_dir), "--max-tokens", "12", "--seed", "3"])
    assert code == 0
    captured = capsys.readouterr()
    assert captured.out.strip() != ""
    assert "<|im_end|>" not in captured.out
    assert "tokens/s" in captured.err


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["generate", "山", "--model", "no-such-model-folder"]) == 2
    assert "model 'no-such-model-folder' not found" in capsys.readouterr().err


def test_train_plan_only_prints_mapping(tmp_path, tiny_model_dir, capsys):
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    row = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
    (dataset / "train.jsonl").write_text((row + "\n") * 30)
    (dataset / "valid.jsonl").write_text((row + "\n") * 4)
    code = main(["train", "--config", "configs/train_config.yaml", "--model", str(tiny_model_dir), "--dataset-dir", str(dataset), "--plan-only"])
    assert code == 0
    err = capsys.readouterr().err
    assert "2 / 0.05" in err  # scale 2 and dropout
    assert "all 2" in err  # every layer of the tiny model
    # 3 epochs x 15 batches = 45 iterations, rounded up to 12 updates of 4.
    assert re.search(r"iterations \(mlx-lm iters\)\s+48\b", err)
    assert re.search(r"optimizer updates\s+12\b", err)


def test_language_switch_translates_messages():
    i18n.set_language("zh")
    try:
        assert i18n._("training examples") != "training examples"
    finally:
        i18n.set_language("en")


def test_quickstart_runs_end_to_end_on_tiny_model(tmp_path, tiny_model_dir, capsys):
    code = main([
        "quickstart", "--model", str(tiny_model_dir), "--work-dir", str(tmp_path / "qs"),
        "--max-steps", "2", "--max-tokens", "8",
    ])
    assert code == 0
    captured = capsys.readouterr()
    assert "Quickstart finished" in captured.err
    assert "JSON method constrained" in captured.err
    assert (tmp_path / "qs" / "adapters" / "quickstart" / "adapters.safetensors").is_file()
    assert (tmp_path / "qs" / "dataset" / "train.jsonl").is_file()
    assert "python -m nbp_mlx train --config configs/train_config.yaml" in captured.err


def test_import_refuses_to_overwrite_its_input(tmp_path, capsys):
    source = tmp_path / "prompts.jsonl"
    source.write_text('{"prompt": "A red teapot."}\n', encoding="utf-8")
    before = source.read_bytes()
    assert main(["data", "import", str(source), "-o", str(source)]) == 2
    assert "would overwrite the input file" in capsys.readouterr().err
    assert source.read_bytes() == before


def test_import_into_a_folder_is_a_clear_error(tmp_path, capsys):
    source = tmp_path / "prompts.jsonl"
    source.write_text('{"prompt": "A red teapot."}\n', encoding="utf-8")
    assert main(["data", "import", str(source), "-o", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "the output is a folder" in error
    assert "Traceback" not in error
    assert main(["data", "import", str(tmp_path), "-o", str(tmp_path / "out.jsonl")]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_plan_names_partial_layer_count():
    from nbp_mlx.config import config_from_dict, plan_training

    rows = dict(plan_training(config_from_dict({"lora_layers": 8}), 40, 24).describe())
    assert rows["LoRA layers"] == "last 8 of 24"
    assert dict(plan_training(config_from_dict({}), 40, 24).describe())["LoRA layers"] == "all 24"


def test_export_ollama_rejects_a_file_that_is_not_gguf(tmp_path, capsys):
    fake = tmp_path / "fake.gguf"
    fake.write_text("not a model")
    assert main(["export", "ollama", "--gguf", str(fake), "--name", "nbp-test"]) == 2
    assert "not a GGUF file" in capsys.readouterr().err
    assert not (tmp_path / "Modelfile").exists()


@pytest.mark.parametrize("option", ["--max-seq-length", "--batch-size"])
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_prepare_rejects_bad_numbers(option, value, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["data", "prepare", option, value])

    assert caught.value.code == 2
    assert option in capsys.readouterr().err


def test_generate_into_closed_pipe_exits_quietly(tiny_model_dir):
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head` that has already exited: every write fails with EPIPE
    command = [sys.executable, "-m", "nbp_mlx", "generate", "霓虹街头", "--model", str(tiny_model_dir), "--max-tokens", "8"]
    try:
        completed = subprocess.run(command, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)

    assert "Traceback" not in completed.stderr
    assert completed.returncode == 141
