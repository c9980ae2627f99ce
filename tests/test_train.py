"""A real Trainer fine-tune of the embedded tiny BLOOM on CPU, through the lesson's own entry point."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def run_baseline(*flags, cwd=REPO):
    return subprocess.run([sys.executable, str(REPO / "baseline" / "train.py"), *flags], cwd=cwd, env=OFFLINE,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    result = run_baseline("--profile", "tiny", "--run-dir", str(tmp / "run"), "--output-dir", str(tmp / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp, result


def read_events(run_dir):
    return [json.loads(line) for line in (run_dir / "log_history.jsonl").read_text().splitlines()]


def test_tiny_finetune_loss_falls(tiny_run):
    tmp, _ = tiny_run
    events = read_events(tmp / "run")
    train_losses = [e["loss"] for e in events if "loss" in e]
    eval_losses = [e["eval_loss"] for e in events if "eval_loss" in e]
    assert len(eval_losses) == 3, "one evaluation per epoch"
    assert train_losses[-1] < train_losses[0] - 1.0
    assert eval_losses[-1] < eval_losses[0]


def test_run_folder_is_complete(tiny_run):
    tmp, result = tiny_run
    manifest = json.loads((tmp / "run" / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["exit_code"] == 0
    assert manifest["lesson"] == "baseline" and manifest["model"] == "bloom-tiny"
    assert manifest["train_samples"] == 180 and manifest["eval_samples"] == 20  # 200-example subset, 90/10
    # 180 examples / batch 4 = 45 micro-batches; / accumulation 4 -> 12 optimizer steps per epoch
    assert manifest["steps_per_epoch"] == 12
    final = read_events(tmp / "run")[-1]
    assert final["step"] == 36 and "train_runtime" in final
    assert manifest["peak_memory"]["device"] == "cpu" and manifest["peak_memory"]["host_peak_rss_mib"] > 100
    assert manifest["versions"]["torch"] and manifest["start_time"] <= manifest["end_time"]
    assert "fp16 needs a CUDA GPU" in result.stdout  # the lesson asks for fp16; CPU falls back, and says so
    assert "[workshop] step 12/36" in result.stdout   # progress is visible while it runs


def test_final_model_saved_as_safetensors_and_reloads(tiny_run):
    from workshop.model import load_saved

    tmp, _ = tiny_run
    final = tmp / "out" / "final"
    assert (final / "model.safetensors").exists() and not list(final.glob("*.bin"))
    model, tokenizer = load_saved(final)
    assert model.config.model_type == "bloom" and tokenizer.pad_token_id == 3


def test_unknown_model_is_one_clear_line(tmp_path):
    result = run_baseline("--model", "bloom-9000b", "--run-dir", str(tmp_path / "run"))
    assert result.returncode != 0
    assert "error: unknown model 'bloom-9000b'" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_hub_cache_says_to_prefetch(tmp_path):
    env_home = {"HF_HOME": str(tmp_path / "empty-cache")}
    result = subprocess.run([sys.executable, str(REPO / "baseline" / "train.py"), "--run-dir", str(tmp_path / "r")],
                            cwd=REPO, env={**OFFLINE, **env_home}, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "python -m workshop.prefetch" in result.stderr
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "prefetch" in manifest["error"]
    assert manifest["exit_code"] == result.returncode == 2


def test_subset_larger_than_data_is_rejected(tmp_path):
    result = run_baseline("--profile", "tiny", "--subset-size", "100000", "--run-dir", str(tmp_path / "r"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "larger than the dataset" in result.stderr
