"""The shipped DeepSpeed configs, and load_ds_config's errors for broken ones."""

import copy
import json
from pathlib import Path

import pytest

from workshop.deepspeed.config import (TOP_LEVEL_KEYS, ConfigError, describe, load_ds_config, needed_ops,
                                needs_cpu_adam, quiet_deepspeed)

CONFIGS = Path(__file__).resolve().parents[1] / "deepspeed_single_gpu" / "configs"
SHIPPED = {  # file -> what describe() says about it
    "stage0": "ZeRO 0",
    "stage1": "ZeRO 1",
    "stage1_offload": "ZeRO 1 + optimizer offload (pin_memory=true)",
    "stage2": "ZeRO 2",
    "stage2_offload": "ZeRO 2 + optimizer offload (pin_memory=true)",
    "stage2_offload_nopin": "ZeRO 2 + optimizer offload (pin_memory=false)",
    "stage2_zenflow": "ZeRO 2 + optimizer offload (pin_memory=true) + ZenFlow",
    "stage3": "ZeRO 3",
    "stage3_offload": "ZeRO 3 + optimizer and parameter offload (pin_memory=true)",
    "stage3_offload_nopin": "ZeRO 3 + optimizer and parameter offload (pin_memory=false)",
    "stage3_offload_nvme": "ZeRO 3 + optimizer and parameter offload to nvme (pin_memory=true)",
}


def offloads(name):
    """The config offloads the optimizer (ZenFlow is classic ZeRO-2 offload underneath)."""
    return "offload" in name or "zenflow" in name


def test_the_folder_holds_exactly_the_lesson_configs_and_the_readme_covers_each():
    assert sorted(p.stem for p in CONFIGS.glob("*.json")) == sorted(SHIPPED)
    readme = (CONFIGS / "README.md").read_text()
    for name in SHIPPED:
        assert f"`{name}.json`" in readme


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_config_validates_and_describes_itself(name):
    cfg = load_ds_config(CONFIGS / f"{name}.json")
    assert describe(cfg) == SHIPPED[name]
    assert cfg["zero_optimization"]["stage"] == int(name[5])
    assert needs_cpu_adam(cfg) == offloads(name)
    assert needed_ops(cfg) == (["cpu_adam"] if offloads(name) else ["fused_adam"]) + (["async_io"] if "nvme" in name
                                                                                     else [])
    assert cfg["gradient_clipping"] == 1.0
    assert cfg["optimizer"] == {"type": "AdamW", "params": {"lr": 5e-5, "betas": [0.9, 0.999], "eps": 1e-8,
                                                             "weight_decay": 0.01}}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_deepspeed_accepts_shipped_config_once_the_trainer_filled_the_autos(name, tmp_path):
    """Fill the autos the way the Trainer does, then build DeepSpeed's own config object from it."""
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, unset_hf_deepspeed_config

    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=4,
                             learning_rate=5e-5, weight_decay=0.01, report_to=[], use_cpu=True)
    cfg = load_ds_config(CONFIGS / f"{name}.json")
    try:
        hf = HfTrainerDeepSpeedConfig(copy.deepcopy(cfg))
        hf.trainer_config_process(args)
        hf.trainer_config_finalize(args, model=None, num_training_steps=10)  # raises on any mismatch
        filled = hf.config
    finally:
        unset_hf_deepspeed_config()  # the Trainer keeps a global reference; don't leak ZeRO-3 into other tests
    assert "auto" not in json.dumps(filled)
    assert (filled["train_micro_batch_size_per_gpu"], filled["gradient_accumulation_steps"],
            filled["train_batch_size"]) == (4, 4, 16)

    with quiet_deepspeed():  # no torch.distributed here: DeepSpeedConfig falls back to world size 1
        ds = DeepSpeedConfig(filled)
    assert ds.zero_optimization_stage == int(name[5])
    assert ds.train_batch_size == 16 and ds.gradient_clipping == 1.0
    assert ds.optimizer_name == "adamw"
    offload = ds.zero_config.offload_optimizer
    assert (offload is not None and offload.device == ("nvme" if "nvme" in name else "cpu")) == offloads(name)
    if offloads(name):
        assert offload.pin_memory == ("nopin" not in name)
    assert (ds.zero_config.offload_param is not None) == name.startswith("stage3_offload")
    assert (ds.zero_config.zenflow is not None) == ("zenflow" in name)


def test_zenflow_config_is_what_deepspeeds_zenflow_runs_under_the_trainer():
    """DeepSpeed's own ZenFlowConfig holds the file's values, and none is "auto": accelerate takes every "auto"
    for a value the Trainer must fill in and stops on ZenFlow's (select_strategy "auto" failed so on a CPU run)."""
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    cfg = load_ds_config(CONFIGS / "stage2_zenflow.json")
    written = cfg["zero_optimization"]["zenflow"]
    assert "auto" not in json.dumps(written)
    with quiet_deepspeed():
        zenflow = DeepSpeedZeroConfig(**cfg["zero_optimization"]).zenflow
    assert {key: getattr(zenflow, key) for key in written} == written
    assert zenflow.overlap_step and zenflow.select_strategy == "step"
    # ZenFlow's update interval counts micro-batches and becomes DeepSpeed's gradient accumulation
    # (deepspeed/runtime/zenflow/engine.py): it must be the lesson's accumulation of 4
    assert zenflow.update_interval == 4 and zenflow.select_interval >= zenflow.update_interval


def _write(tmp_path, cfg_or_text):
    path = tmp_path / "x.json"
    path.write_text(cfg_or_text if isinstance(cfg_or_text, str) else json.dumps(cfg_or_text))
    return path


def _stage2(**zero_changes):
    cfg = json.loads((CONFIGS / "stage2.json").read_text())
    cfg["zero_optimization"].update(zero_changes)
    return cfg


def _renamed(cfg, old, new):
    cfg[new] = cfg.pop(old)
    return cfg


BAD = [
    ('{"zero_optimization": {"stage": 2,}}', "not valid JSON"),
    ("[1, 2]", "the top level must be a JSON object"),
    (_renamed(_stage2(), "zero_optimization", "zero_optimisation"),
     "zero_optimisation: unknown key (did you mean 'zero_optimization'?)"),
    (_renamed(_stage2(), "gradient_clipping", "gradient_cliping"), "gradient_cliping: unknown key"),
    (_stage2(stage=4), "zero_optimization.stage must be 0, 1, 2 or 3 (got 4)"),
    (_stage2(stage="auto"), "zero_optimization.stage must be 0, 1, 2 or 3 (got 'auto')"),
    (_stage2(offload_param={"device": "cpu"}), "zero_optimization.offload_param needs stage 3 (stage is 2)"),
    (_stage2(offload_optimizer={"device": "gpu"}), "zero_optimization.offload_optimizer.device:"),
    (_stage2(offload_optimiser={"device": "cpu"}), "zero_optimization.offload_optimiser: unknown key"),
    (_stage2(offload_optimizer={"device": "cpu", "pin_memroy": True}),
     "zero_optimization.offload_optimizer.pin_memroy: unknown key"),
    ({**_stage2(), "fp16": {"enable": True}}, "fp16.enable: unknown key (did you mean 'enabled'?)"),
    ({**_stage2(), "fp16": {"enabled": True}, "bf16": {"enabled": True}}, "cannot be simultaneously enabled"),
    ({**_stage2(), "train_batch_size": 10, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 4},
     "10 != 4 * 4 * 1"),
]


@pytest.mark.parametrize("bad, message", BAD, ids=[m.split(":")[0][:40] for _, m in BAD])
def test_broken_config_gives_one_clear_error_naming_file_and_key(tmp_path, bad, message):
    path = _write(tmp_path, bad)
    with pytest.raises(ConfigError) as caught:
        load_ds_config(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and message in text
    assert "\n" not in text and isinstance(caught.value, ValueError)


def test_offload_param_is_fine_at_stage_3_and_nvme_is_an_accepted_device(tmp_path):
    cfg = _stage2(stage=3, offload_param={"device": "nvme", "nvme_path": str(tmp_path)})
    assert describe(load_ds_config(_write(tmp_path, cfg))) == "ZeRO 3 + parameter offload to nvme (pin_memory=true)"


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_ds_config(tmp_path / "nope.json")


def test_allowlist_covers_every_top_level_key_deepspeed_reads():
    """Record the keys DeepSpeedConfig looks up; a DeepSpeed upgrade adding one makes this fail."""
    from deepspeed.runtime.config import DeepSpeedConfig

    looked_up = set()

    class Keys:
        def __init__(self, d):
            self.d = d

        def __contains__(self, key):
            looked_up.add(key)
            return dict.__contains__(self.d, key)

        def __iter__(self):
            return dict.__iter__(self.d)

    class Recording(dict):
        def get(self, key, *default):
            looked_up.add(key)
            return super().get(key, *default)

        def __getitem__(self, key):
            looked_up.add(key)
            return super().__getitem__(key)

        def __contains__(self, key):
            looked_up.add(key)
            return super().__contains__(key)

        def keys(self):
            return Keys(self)

    with quiet_deepspeed():
        DeepSpeedConfig(Recording(train_micro_batch_size_per_gpu=1))
    assert len(looked_up) > 40  # the recording itself worked
    assert looked_up - TOP_LEVEL_KEYS == set()
