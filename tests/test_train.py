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
def tiny_run(lesson_logs):
    """(run folder, output folder, the training's output) of the lesson's tiny walk-through run, `bash
    slurm/baseline.slurm --profile tiny` (baseline/train.py under the loggers), made once per session."""
    [run_dir] = lesson_logs("baseline", ("slurm/baseline.slurm",)).glob("baseline-local*")
    return run_dir, run_dir.parents[1] / "outputs" / run_dir.name, (run_dir / "train.out").read_text()


def read_events(run_dir):
    return [json.loads(line) for line in (run_dir / "log_history.jsonl").read_text().splitlines()]


def test_tiny_finetune_loss_falls(tiny_run):
    run_dir, _, _ = tiny_run
    events = read_events(run_dir)
    train_losses = [e["loss"] for e in events if "loss" in e]
    eval_losses = [e["eval_loss"] for e in events if "eval_loss" in e]
    assert len(eval_losses) == 3, "one evaluation per epoch"
    assert train_losses[-1] < train_losses[0] - 1.0
    assert eval_losses[-1] < eval_losses[0]


def test_run_folder_is_complete(tiny_run):
    run_dir, _, output = tiny_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["exit_code"] == 0
    assert manifest["lesson"] == "baseline" and manifest["model"] == "bloom-tiny"
    assert manifest["train_samples"] == 180 and manifest["eval_samples"] == 20  # 200-example subset, 90/10
    # 180 examples / batch 4 = 45 micro-batches; / accumulation 4 -> 12 optimizer steps per epoch
    assert manifest["steps_per_epoch"] == 12
    final = read_events(run_dir)[-1]
    assert final["step"] == 36 and "train_runtime" in final
    assert manifest["peak_memory"]["device"] == "cpu" and manifest["peak_memory"]["host_peak_rss_mib"] > 100
    assert manifest["versions"]["torch"] and manifest["start_time"] <= manifest["end_time"]
    assert "fp16 needs a CUDA GPU" in output  # the lesson asks for fp16; CPU falls back, and says so
    assert "[workshop] step 12/36" in output   # progress is visible while it runs


def test_final_model_saved_as_safetensors_and_reloads(tiny_run):
    from workshop.model import load_saved

    _, out_dir, _ = tiny_run
    final = out_dir / "final"
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


def test_fewer_syncs_logs_the_same_token_counts_and_losses(tmp_path):
    """--fewer-syncs (make it fast) reads the real-token count back once per log instead of after every
    micro-batch: what is logged, checkpointed and timed must not change, only when it is read."""
    flags = ["--profile", "tiny", "--padding", "longest", "--max-steps", "8", "--logging-steps", "2",
             "--eval-strategy", "no", "--save-strategy", "steps", "--save-steps", "4", "--no-save-final"]
    runs = {}
    for name, extra in (("stock", []), ("fewer", ["--fewer-syncs"])):
        result = run_baseline(*flags, *extra, "--run-dir", str(tmp_path / name), "--output-dir",
                              str(tmp_path / f"out-{name}"))
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = [e for e in read_events(tmp_path / name) if "loss" in e or "train_runtime" in e]
    counts = {name: [e["num_input_tokens_seen"] for e in events] for name, events in runs.items()}
    assert counts["fewer"] == counts["stock"] and len(set(counts["stock"])) >= 4  # 4 logs, counts growing
    assert [e.get("loss") for e in runs["fewer"]] == [e.get("loss") for e in runs["stock"]]
    saved = {name: json.loads((tmp_path / f"out-{name}" / "checkpoint-4" / "trainer_state.json").read_text())
             for name in runs}
    assert saved["fewer"]["num_input_tokens_seen"] == saved["stock"]["num_input_tokens_seen"] > 0
    assert saved["fewer"]["total_flos"] == saved["stock"]["total_flos"] > 0
    manifests = {name: json.loads((tmp_path / name / "manifest.json").read_text()) for name in runs}
    assert manifests["fewer"]["speed"]["tokens_seen"] == manifests["stock"]["speed"]["tokens_seen"]


def test_fewer_syncs_defers_the_count_to_the_next_log(tmp_path):
    import torch
    from transformers import TrainingArguments

    from workshop.fewer_syncs import FewerSyncsTrainer
    from workshop.model import load_model

    model, _ = load_model("tiny")
    args = TrainingArguments(output_dir=str(tmp_path), include_num_input_tokens_seen="non_padding", report_to=[],
                             use_cpu=True)
    trainer = FewerSyncsTrainer(model=model, args=args)
    batch = {"input_ids": torch.ones(2, 8, dtype=torch.long),
             "attention_mask": torch.tensor([[1] * 8, [1] * 5 + [0] * 3])}
    trainer._track_num_input_tokens(batch)
    trainer._track_num_input_tokens(batch)
    assert trainer.state.num_input_tokens_seen == 0  # nothing read back yet: no sync per micro-batch
    logged = {}
    trainer.log(logged)
    assert trainer.state.num_input_tokens_seen == 26 and logged["num_input_tokens_seen"] == 26
    flops = 6 * model.num_parameters(exclude_embeddings=True) * 16
    assert trainer.floating_point_ops(batch) == flops == trainer.floating_point_ops(batch)  # counted once, reused


def test_steps_jsonl_times_every_optimizer_step(tiny_run):
    """One line per optimizer step: 180 rows in steps of 16 leave a 4-row last step each epoch, which names no
    sample count; the real-token counts add up to the Trainer's own."""
    run_dir, _, _ = tiny_run
    steps = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == list(range(1, 37))
    assert all(s["seconds"] > 0 for s in steps)
    assert [s["step"] for s in steps if "samples" not in s] == [12, 24, 36]
    assert {s["samples"] for s in steps if "samples" in s} == {16}
    final = read_events(run_dir)[-1]
    assert sum(s["tokens"] for s in steps) == final["num_input_tokens_seen"]


def test_manifest_holds_model_states_and_the_training_window(tiny_run):
    """The plain Trainer's model states: fp32 weights and gradients (4 bytes a parameter each) and AdamW's two
    moments (8); three evaluations inside the training window, marked as excluded."""
    run_dir, _, _ = tiny_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    n = manifest["parameters"]
    assert manifest["model_states"] == {
        "world_size": 1, "zero_stage": None,
        "bytes_per_process": {"parameters": 4 * n, "gradients": 4 * n, "optimizer": 8 * n},
        "device": {"parameters": "cpu", "gradients": "cpu", "optimizer": "cpu"}}
    window = manifest["training_window"]
    evaluations = [w for w in manifest["excluded_windows"] if w["what"] == "evaluation"]
    assert len(evaluations) == 3 and window["start"] < window["end"]
    assert all(window["start"] <= w["start"] <= w["end"] <= window["end"] for w in evaluations)


def test_a_max_length_too_long_for_this_machine_is_one_clear_line_before_anything_loads(tmp_path):
    """--max-length 100000 padded every row to 100,000 tokens: a minute of tokenizing, then a 40 GB allocation.
    The host-memory preflight (workshop/deepspeed/preflight.py) refuses it before the model or data load."""
    result = run_baseline("--profile", "tiny", "--max-length", "100000", "--run-dir", str(tmp_path / "r"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "bloom-tiny under no DeepSpeed needs about" in line and "--max-length" in line, line
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "parameters" not in manifest  # refused before the model was built


def test_an_unreachable_hub_is_asked_once_not_retried(tmp_path):
    """An uncached --model without HF_HUB_OFFLINE on a node that cannot reach the Hub: huggingface_hub retried (99 s
    on a cluster) before the clear error. The Hub here is a local socket that counts connections and drops each."""
    import socket
    import threading

    hub = socket.socket()
    hub.bind(("127.0.0.1", 0))
    hub.listen(16)
    calls = []

    def drop_each():
        while True:
            try:
                connection, _ = hub.accept()
            except OSError:  # closed: the test is over
                return
            calls.append(1)
            connection.close()

    threading.Thread(target=drop_each, daemon=True).start()
    env = {key: value for key, value in os.environ.items() if not key.endswith("_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{hub.getsockname()[1]}", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run([sys.executable, str(REPO / "baseline" / "train.py"), "--profile", "tiny", "--model",
                             "someorg/not-cached", "--run-dir", str(tmp_path / "r")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    hub.close()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "is unreachable from here" in result.stdout and "from the cache alone" in result.stdout
    assert "it is not in the Hugging Face cache and the Hub is unreachable" in result.stderr
    assert len(calls) == 1  # the one look; huggingface_hub's own retries made 4 here, more on a real network
