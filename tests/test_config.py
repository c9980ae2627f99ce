import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from workshop.config import (PROFILES, RECIPES, SECTIONS, RunConfig, Trainer, WorkshopError, parse_args,
                             resolve_precision)


def test_lesson_defaults_match_the_lesson():
    cfg = parse_args([])
    assert (cfg.model, cfg.subset_size, cfg.max_length) == ("bigscience/bloom-560m", 500, 512)
    assert (cfg.per_device_train_batch_size, cfg.per_device_eval_batch_size, cfg.gradient_accumulation_steps) == (4, 4, 4)
    assert (cfg.num_train_epochs, cfg.learning_rate, cfg.weight_decay) == (3, 5e-5, 0.01)
    assert cfg.output_dir == "./bloom-qa-finetuned" and cfg.gradient_checkpointing is False
    assert cfg.eval_strategy == cfg.save_strategy == "epoch"


def test_profile_then_flags_override():
    cfg = parse_args(["--profile", "tiny", "--learning-rate", "1e-4", "--no-fp16"])
    assert cfg.model == "bloom-tiny" and cfg.data == "embedded"
    assert cfg.subset_size == PROFILES["tiny"]["subset_size"]
    assert cfg.learning_rate == 1e-4 and cfg.fp16 is False


def test_launcher_local_rank_is_accepted():
    assert parse_args(["--local_rank=0"]).model == "bigscience/bloom-560m"


@pytest.mark.parametrize("flags, message", [
    (["--model", "650m"], "unknown model '650m'"),
    (["--model", "bloom-650m"], "unknown model 'bloom-650m'"),
    (["--model", "./no/such/folder"], "unknown model './no/such/folder'"),
    (["--subset-size", "1"], "--subset-size must be at least 2"),
    (["--data", "/no/such.json"], "does not exist"),
    (["--fp16", "--bf16"], "choose one of --fp16 and --bf16"),
    (["--deepspeed", "/no/such/ds.json"], "no such file"),
    # each of these once gave a traceback, or trained something the user did not ask for
    (["--num-train-epochs", "nan"], "--num-train-epochs must be a positive number"),
    (["--num-train-epochs", "0"], "--num-train-epochs must be a positive number"),
    (["--learning-rate", "nan"], "--learning-rate must be a positive number"),
    (["--learning-rate", "-1"], "--learning-rate must be a positive number"),
    (["--learning-rate", "inf"], "--learning-rate must be a positive number"),
    (["--logging-steps", "0"], "--logging-steps must be at least 1"),
    (["--save-steps", "0"], "--save-steps must be at least 1"),
    (["--warmup-steps", "-1"], "--warmup-steps must be 0 or more"),
    (["--seed", "-1"], "--seed must be between 0 and 2\\*\\*32 - 1"),
    (["--max-steps", "0"], "--max-steps must be at least 1, or -1"),
    (["--max-steps", "-2"], "--max-steps must be at least 1, or -1"),
    (["--subset-size", "200", "--eval-fraction", "0.999"], "leaves no example to train on"),
    (["--config-name", "../../x"], "--config-name names a folder under logs/"),
    (["--config-name", ".hidden"], "--config-name names a folder under logs/"),
    (["--output-dir", "/etc/hostname"], "--output-dir /etc/hostname is a file, not a folder"),
    (["--run-dir", "/etc/hostname/run"], "--run-dir /etc/hostname/run: /etc/hostname is not writable"),
    (["--run-dir", "/etc/hostname"], "--run-dir /etc/hostname is a file, not a folder"),
])
def test_bad_settings_raise_one_clear_error(flags, message):
    with pytest.raises(WorkshopError, match=message):
        parse_args(flags)


@pytest.mark.parametrize("content", ["root:x:0:0:root:/root:/bin/bash\n", "{\"data\": 3}", "[]", "\udcff"])
def test_a_data_file_that_is_not_squad_json_is_one_clear_error(tmp_path, content):
    from workshop.data import load_squad

    path = tmp_path / "data.json"
    path.write_text(content, errors="surrogateescape")
    with pytest.raises(WorkshopError, match="not a readable SQuAD v1.1 JSON file"):
        load_squad(10, source=str(path))


@pytest.mark.parametrize("flags, message", [
    (["--output", "x"], "unrecognized arguments: --output x"),  # no longer taken for --output-dir
    (["--save-strategy", "best"], "invalid choice: 'best'"),
])
def test_abbreviations_and_options_that_cannot_work_are_argparse_errors(capsys, flags, message):
    with pytest.raises(SystemExit) as stop:
        parse_args(flags)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_an_unknown_token_flag_is_refused_without_echoing_the_token(capsys):
    token = "hf_" + "Ab1" * 12
    with pytest.raises(SystemExit):
        parse_args(["--hub-token", token])
    with pytest.raises(SystemExit):
        parse_args(["--token=" + token])
    err = capsys.readouterr().err
    assert "unrecognized arguments: --hub-token <redacted>" in err and token not in err


@pytest.mark.parametrize("name", ["gpt2", "distilgpt2", "openai-community/gpt2", "Qwen/Qwen2-0.5B"])
def test_hub_ids_with_and_without_an_organisation_are_taken_as_given(name):
    assert parse_args(["--model", name]).model == name  # the cache (or the Hub) decides when the job loads it


def test_bad_choice_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--init", "warm"])
    assert "invalid choice: 'warm'" in capsys.readouterr().err


def test_fp16_falls_back_with_a_notice_on_cpu(capsys):
    assert resolve_precision(parse_args([]), has_cuda=False, bf16_supported=False) == (False, False)
    assert "fp16 needs a CUDA GPU" in capsys.readouterr().out
    assert resolve_precision(parse_args([]), has_cuda=True, bf16_supported=True) == (True, False)


def test_each_setting_belongs_to_one_section_and_help_shows_them(capsys):
    names = [f.name for section in SECTIONS.values() for f in dataclasses.fields(section)]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(RunConfig)) and len(set(names)) == len(names)
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    shown = capsys.readouterr().out
    assert all(f"\n{title}:\n" in shown for title in SECTIONS)
    assert shown.index("\n  --learning-rate") > shown.index("\ntrainer:\n") > shown.index("\n  --max-length")


def test_trainer_section_passes_through_to_the_training_arguments(tmp_path):
    """The trainer section holds TrainingArguments' own names, and every one reaches the Trainer as given."""
    from workshop.deepspeed.plan import prepare
    from workshop.train import training_arguments

    cfg = parse_args(["--profile", "tiny", "--warmup-steps", "3", "--save-strategy", "steps", "--save-steps", "7",
                      "--seed", "5", "--output-dir", str(tmp_path)])
    args = training_arguments(cfg, prepare(cfg))
    for name, value in cfg.section(Trainer).items():
        assert getattr(args, name) == value, name
    assert (args.fp16, args.bf16) == (False, False)  # the plan's precision: fp32 on this CPU


def test_lesson_recipes_set_defaults_that_profile_and_flags_override():
    multi = parse_args([], lesson="deepspeed_multi_gpu")
    stage0 = Path(__file__).resolve().parents[1] / RECIPES["deepspeed_multi_gpu"].defaults["deepspeed"]
    assert multi.model == "bigscience/bloom-1b7" and Path(multi.deepspeed).resolve() == stage0 and stage0.is_file()
    assert parse_args(["--profile", "tiny"], lesson="deepspeed_multi_gpu").model == "bloom-tiny"
    assert parse_args(["--model", "3b"], lesson="deepspeed_multi_gpu").model == "3b"
    with pytest.raises(WorkshopError, match="the deepspeed_single_gpu lesson needs a DeepSpeed config"):
        parse_args(["--profile", "tiny"], lesson="deepspeed_single_gpu")
    assert vars(parse_args([], lesson="echo")) == {**vars(parse_args([])), "lesson": "echo"}  # no recipe: baseline


def test_a_bad_flag_fails_before_torch_and_transformers_load():
    probe = ("import sys\nfrom workshop.entry import main\ntry:\n    main(['--subset-size', '1'])\n"
             "except SystemExit as stop:\n    print(stop.code, 'torch' in sys.modules, 'transformers' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["2", "False", "False"], run.stdout + run.stderr
    assert run.stderr == "error: --subset-size must be at least 2 (got 1)\n"


@pytest.mark.parametrize("flag", ["--output-dir", "--run-dir"])
def test_a_read_only_output_or_run_folder_is_one_error_line_before_training(tmp_path, flag):
    """Refused up front, with permissions enforced as for a student (as root every folder is writable: the test
    drops root's override), not at the first save after every step."""
    from tests.test_fill_tables import with_permissions_enforced

    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    run = subprocess.run([*with_permissions_enforced(), sys.executable, "baseline/train.py", "--profile", "tiny",
                          flag, str(read_only / "run")], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])  # the lesson's script checks before torch loads
    assert run.returncode == 2 and run.stdout == "", run.stdout + run.stderr[-2000:]
    assert run.stderr == f"error: {flag} {read_only / 'run'}: {read_only} is not writable by this user\n"
