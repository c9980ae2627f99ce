import pytest

from workshop.config import PROFILES, WorkshopError, parse_args, resolve_precision


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
])
def test_bad_settings_raise_one_clear_error(flags, message):
    with pytest.raises(WorkshopError, match=message):
        parse_args(flags)


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
