from __future__ import annotations

from pathlib import Path

import pytest

from nbp_mlx.config import config_from_dict, load_config, plan_training
from nbp_mlx.errors import ConfigError

SEED_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "train_config.yaml"


def test_seed_config_maps_onto_mlx_lm():
    config = load_config(SEED_CONFIG)
    plan = plan_training(config, train_examples=120, model_layers=24)

    assert plan.lora_parameters["scale"] == 2.0
    assert plan.lora_parameters["rank"] == 16
    assert plan.lora_parameters["dropout"] == 0.05
    assert plan.lora_parameters["keys"] == [
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
    ]
    assert plan.num_layers == 24
    # 120 examples / batch 2 = 60 batches per epoch; 3 epochs = 180 iterations = 45 updates of 4.
    assert plan.batches_per_epoch == 60
    assert plan.iterations == 180
    assert plan.optimizer_updates == 45
    assert plan.warmup_updates == 4  # round(0.1 * 45)
    assert plan.lr_schedule == {"name": "cosine_decay", "arguments": [2e-4, 41, 0.0], "warmup": 4, "warmup_init": 0.0}
    assert plan.mask_prompt is True


def test_iterations_round_up_to_whole_updates():
    config = config_from_dict({"num_train_epochs": 1})
    plan = plan_training(config, train_examples=15, model_layers=2)
    # 7 batches per epoch (the last odd example is dropped), rounded up to 2 updates of 4.
    assert plan.batches_per_epoch == 7
    assert plan.iterations == 8
    assert plan.optimizer_updates == 2


def test_schedule_counts_optimizer_updates():
    from mlx_lm.tuner.utils import build_schedule

    plan = plan_training(load_config(SEED_CONFIG), train_examples=120, model_layers=24)
    schedule = build_schedule(plan.lr_schedule)
    assert float(schedule(0)) == 0.0
    assert float(schedule(4)) == pytest.approx(2e-4, rel=1e-5)
    assert float(schedule(45)) == pytest.approx(0.0, abs=1e-6)
    rates = [float(schedule(step)) for step in range(5, 46)]
    assert rates == sorted(rates, reverse=True)


def test_max_steps_replaces_epochs():
    plan = plan_training(config_from_dict({"max_steps": 3}), train_examples=100, model_layers=2)
    assert plan.optimizer_updates == 3
    assert plan.iterations == 12


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"lora_rankk": 16}, "unknown key(s) lora_rankk"),
        ({"lora_rank": "sixteen"}, "key 'lora_rank' has invalid value 'sixteen'"),
        ({"lora_target": "q_proj,qkv"}, "lora_target"),
        ({"lr_scheduler_type": "polynomial"}, "use one of: cosine, linear, constant"),
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size"),
    ],
)
def test_invalid_values_name_the_key(raw, fragment):
    with pytest.raises(ConfigError) as error:
        config_from_dict(raw, source="my.yaml")
    assert "my.yaml" in str(error.value)
    assert fragment in str(error.value)


def test_missing_and_broken_config_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("lora_rank: [16\n")
    with pytest.raises(ConfigError, match="broken.yaml: invalid YAML"):
        load_config(broken)


def test_too_few_examples_for_one_batch():
    with pytest.raises(ConfigError, match="fewer than one batch of 2"):
        plan_training(config_from_dict({}), train_examples=1, model_layers=2)
