"""The make-it-fast lesson on the tiny model: packing and dynamic padding, the fused loss, real-token counting,
speed figures in the manifest and fill_tables, slurm/fast.slurm, the benchmark runner and notebook 04."""
import gzip
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from transformers import BloomConfig

from conftest import made_once, walkthrough_logs
from test_slurm import job_env
from test_train import read_events, run_baseline
from workshop import fused_loss
from workshop.config import WorkshopError, parse_args
from workshop.data import collator, load_squad, pack, real_tokens, tokenize
from workshop.fill_tables import build_tables, find_runs
from workshop.fused_loss import check_supported, use_fused_loss
from workshop.model import BLOOM_SHAPES, BLOOM_VOCAB, load_model
from workshop.shapes import FAMILIES
from workshop.speed import flops_per_token, peak_flops

REPO = Path(__file__).resolve().parents[1]
TINY_LENGTH = 160  # the tiny profile's max_length


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = load_model("tiny", seed=0)
    return model, tokenizer, load_squad(12, source="embedded")


def test_pack_makes_full_rows_of_real_tokens_in_order(tiny):
    _, tokenizer, examples = tiny
    rows = tokenize(examples, tokenizer, 512, pad=False)
    blocks = pack(rows, 64)
    stream = [tok for row in rows for tok in row["input_ids"]]
    assert len(blocks) == len(stream) // 64  # the partial last block is dropped
    assert [tok for b in blocks for tok in b["input_ids"]] == stream[: len(blocks) * 64]
    assert all(b["attention_mask"] == [1] * 64 and b["labels"] == b["input_ids"] for b in blocks)
    assert real_tokens(blocks) == len(blocks) * 64


def test_dynamic_padding_pads_to_the_batch_not_max_length(tiny):
    _, tokenizer, examples = tiny
    rows = tokenize(examples[:4], tokenizer, 512, pad=False)
    batch = collator(tokenizer, "longest")(rows)
    longest = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape[1] == -(-longest // 8) * 8 < 512  # next multiple of 8
    assert int(batch["attention_mask"].sum()) == real_tokens(rows)
    assert bool(((batch["labels"] == -100) == (batch["attention_mask"] == 0)).all())  # padding never scored


@pytest.mark.parametrize("chunked", [False, True], ids=["fused", "chunked"])
@pytest.mark.parametrize("name", ["tiny", *(f"{family}-tiny" for family in FAMILIES)])
def test_fused_loss_matches_the_stock_loss_and_gradients(tiny, name, chunked, monkeypatch):
    """For every family: the hidden states from model.base_model, the projection from get_output_embeddings().
    Fused: the plain-math path (on a GPU the same forward calls Liger's kernel). Chunked: 100-token chunks, so
    the 4 x 159 scored positions span several, the last one partial."""
    monkeypatch.setattr(fused_loss, "CHUNK_TOKENS", 100)
    _, tokenizer, examples = tiny
    rows = tokenize(examples[:4], tokenizer, TINY_LENGTH, pad=True)
    batch = {k: torch.tensor([r[k] for r in rows]) for k in rows[0]}
    stock, _ = load_model(name, seed=0)
    fused, _ = load_model(name, seed=0)
    use_fused_loss(fused, on_gpu=False, chunked=chunked)
    stock.eval(), fused.eval()  # OPT trains with dropout 0.1: the same weights, not the same random draws
    stock(**batch).loss.backward()
    fused(**batch).loss.backward()
    assert fused(**batch).loss.item() == pytest.approx(stock(**batch).loss.item(), rel=1e-5)
    # chunks sum the output projection's gradient in another order: fp32 rounding, up to ~3e-6 here (Falcon)
    for (name, a), b in zip(stock.named_parameters(), fused.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5 if chunked else 1e-6), name
    # The Trainer's num_items_in_batch (label tokens in the whole accumulated batch) sets the divisor.
    counted = int((batch["labels"][:, 1:] != -100).sum())
    doubled = fused(**batch, num_items_in_batch=torch.tensor(2 * counted)).loss
    assert doubled.item() == pytest.approx(stock(**batch).loss.item() / 2, rel=1e-5)
    assert fused(input_ids=batch["input_ids"]).logits.shape[-1] == stock.config.vocab_size  # no labels: stock


@pytest.mark.slow
def test_chunked_loss_compiles_as_one_graph(monkeypatch):
    """torch.compile traces the chunked loss whole (fullgraph: no graph break, no eager fallback, unlike Liger's
    kernel), and the compiled loss and gradients are the plain ones, ignored targets included."""
    monkeypatch.setattr(fused_loss, "CHUNK_TOKENS", 7)
    torch.manual_seed(0)
    hidden, weight = torch.randn(30, 16, requires_grad=True), torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 50, (30,))
    targets[[3, 10, 29]] = -100
    results = []
    for loss_sum in (fused_loss.plain_loss, torch.compile(fused_loss.chunked_loss, fullgraph=True)):
        hidden.grad = weight.grad = None
        (loss_sum(weight, hidden, targets) / 3).backward()
        results.append((loss_sum(weight, hidden, targets).item(), hidden.grad.clone(), weight.grad.clone()))
    (plain, plain_dh, plain_dw), (chunked, chunked_dh, chunked_dw) = results
    assert chunked == pytest.approx(plain, rel=1e-6)
    assert torch.allclose(chunked_dh, plain_dh, atol=1e-5) and torch.allclose(chunked_dw, plain_dw, atol=1e-5)


def train_tiny(tmp_path, name, *flags):
    run_dir = tmp_path / name
    result = run_baseline("--profile", "tiny", "--max-steps", "4", "--logging-steps", "1", "--save-strategy", "no",
                          "--no-save-final", "--eval-strategy", "no", "--run-dir", str(run_dir),
                          "--output-dir", str(tmp_path / "out" / name), *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [e["loss"] for e in read_events(run_dir) if "loss" in e]
    return json.loads((run_dir / "manifest.json").read_text()), losses


@pytest.mark.slow
def test_trainer_with_chunked_loss_trains_as_the_stock_loss_does_and_under_torch_compile(tmp_path):
    _, stock = train_tiny(tmp_path, "stock")
    manifest, chunked = train_tiny(tmp_path, "chunked", "--chunked-loss")
    assert manifest["settings"]["chunked_loss"] is True and len(chunked) == len(stock) == 4
    assert chunked == pytest.approx(stock, rel=1e-3)  # the same updates: only the loss's arithmetic differs
    manifest, compiled = train_tiny(tmp_path, "compiled", "--chunked-loss", "--torch-compile")
    assert manifest["status"] == "completed" and compiled == pytest.approx(stock, rel=2e-2)


def test_chunked_and_fused_loss_are_one_choice():
    with pytest.raises(WorkshopError, match="choose one of --fused-loss .* and --chunked-loss"):
        parse_args(["--fused-loss", "--chunked-loss"])
    assert parse_args(["--chunked-loss"]).chunked_loss and not parse_args([]).chunked_loss


def test_fused_loss_refuses_zero_stage_3():
    with pytest.raises(WorkshopError, match="ZeRO stage 3"):
        check_supported({"zero_optimization": {"stage": 3}})
    check_supported({"zero_optimization": {"stage": 2}})
    check_supported(None)


def test_flops_per_token_and_device_peaks():
    config = BloomConfig(vocab_size=BLOOM_VOCAB, **BLOOM_SHAPES["bigscience/bloom-560m"])
    n = 559_214_592  # bloom-560m's parameter count (tied embeddings counted once)
    assert flops_per_token(config, n, 512) == 6 * n + 12 * 24 * 1024 * 512
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989.4e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA H200") == 989.4e12
    assert peak_flops("Tesla V100-SXM2-32GB") is None  # unknown: MFU is left empty, not guessed


def run_slurm(script, logs, *args):
    env = {**job_env(), "WORKSHOP_LOGS_ROOT": str(logs), "WORKSHOP_OUTPUTS_ROOT": str(logs.parent / "outputs"),
           "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(["bash", f"slurm/{script}", "--profile", "tiny", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [run_dir] = [d for d in find_runs([logs])[0] if d.name.startswith(script.removesuffix(".slurm"))]
    return run_dir


def made_fast_logs(tmp_path_factory):
    """logs/ with a tiny fast.slurm run and the seed (baseline.slurm) beside it, made once per session:
    tests/test_notebooks.py executes notebook 04 on them. The fast run is the lesson's walk-through run
    (`bash slurm/fast.slurm --profile tiny`, made once per session for tests/test_smoke.py too: a torch.compile
    run the less), copied here with its outputs."""
    def make(folder):
        walked = walkthrough_logs(tmp_path_factory, "make_it_fast")
        [run_dir] = walked.glob("fast-local*")
        shutil.copytree(run_dir, folder / "logs" / run_dir.name)
        shutil.copytree(walked.parent / "outputs" / run_dir.name, folder / "outputs" / run_dir.name)
        run_slurm("baseline.slurm", folder / "logs", "--max-steps", "12", "--num-train-epochs", "1")

    return made_once(tmp_path_factory, "fast", make) / "logs"


@pytest.fixture(scope="module")
def fast_logs(tmp_path_factory):
    return made_fast_logs(tmp_path_factory)


def manifest_of(logs, prefix):
    [run_dir] = [d for d in find_runs([logs])[0] if d.name.startswith(prefix)]
    return json.loads((run_dir / "manifest.json").read_text())


@pytest.mark.slow
def test_fast_slurm_trains_packed_rows_and_counts_only_real_tokens(fast_logs):
    fast, seed = manifest_of(fast_logs, "fast"), manifest_of(fast_logs, "baseline")
    assert fast["status"] == seed["status"] == "completed"
    assert fast["lesson"] == "make_it_fast" and fast["padding"] == "packed"
    settings = fast["settings"]
    assert (settings["per_device_train_batch_size"], settings["gradient_accumulation_steps"]) == (16, 1)
    assert settings["torch_compile"] and settings["optim"] == "adamw_torch_fused"
    # Packed rows are all real tokens: whole rows of 160, at most 16 a step.
    assert fast["speed"]["tokens_seen"] % TINY_LENGTH == 0
    assert fast["speed"]["tokens_seen"] <= fast["steps_done"] * 16 * TINY_LENGTH
    # Padded to 160, the seed run still counts only its real tokens: about its mean row length per row.
    rows = 12 * 16
    assert seed["speed"]["tokens_seen"] / rows == pytest.approx(seed["mean_train_row_tokens"], rel=0.25)
    assert seed["speed"]["tokens_seen"] < 0.6 * rows * TINY_LENGTH
    for manifest in (fast, seed):
        assert manifest["speed"]["real_tokens_per_s"] > 0 and manifest["speed"]["startup_s"] > 0


@pytest.mark.slow
def test_startup_breakdown_from_the_script_launch(fast_logs):
    from workshop.startup import ORDER

    for prefix in ("fast", "baseline"):
        manifest = manifest_of(fast_logs, prefix)
        startup = manifest["startup"]
        assert startup["origin"] == "launched"  # slurm/common.sh's WORKSHOP_LAUNCHED_AT
        names = list(startup["marks_s"])
        assert names == [name for name in ORDER if name in names]
        # the marks come in that order (a process start is known to the 10 ms clock tick, rounded down)
        assert all(phase >= -0.011 for phase in startup["phases_s"].values()), startup["phases_s"]
        assert names[:4] == ["launched", "command_started", "process_start", "imports_done"]
        assert names[-2:] == ["first_step_begin", "first_step_done"] and "ops_loaded" not in names  # no DeepSpeed
        assert sum(startup["phases_s"].values()) == pytest.approx(startup["total_s"], abs=0.1)
        # the Trainer's part agrees with workshop.speed's start-up (from the process start to the first step)
        marks = startup["marks_s"]
        assert marks["first_step_begin"] - marks["process_start"] == pytest.approx(manifest["speed"]["startup_s"],
                                                                                   abs=0.1)


@pytest.mark.slow
def test_fill_tables_make_it_fast_row(fast_logs):
    tables = build_tables([fast_logs], by_run=True)
    [row] = tables["make_it_fast"].to_dict("records")
    assert row["status"] == "completed"
    for change in ("padding packed", "micro-batch 16 x 1", "torch.compile", "adamw_torch_fused"):
        assert change in row["changes"]
    assert isinstance(row["real tokens/s"], float) and row["real tokens/s"] > 0
    assert isinstance(row["final eval loss"], float)
    assert str(row["MFU %"]) == "n/a (no GPU)"  # no CUDA here: no peak to divide by
    assert all("fast" not in name for name in tables["baseline_objective_1"]["run"])  # kept out of lesson 1


@pytest.mark.slow
def test_bench_pairs_variants_and_writes_results(tmp_path):
    out = tmp_path / "res"
    result = subprocess.run(
        [sys.executable, "benchmarks/bench.py", "benchmarks/make_it_fast.toml", "--common", "--profile tiny",
         "--steps", "12", "--only", "seed,packing", "--out", str(out), "--work", str(tmp_path / "runs")],
        cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    saved = json.loads(Path(f"{out}.json").read_text())
    by_name = {row["variant"]: row for row in saved["runs"]}
    assert set(by_name) == {"seed", "packing"} and all(r["status"] == "completed" for r in saved["runs"])
    # Same steps and rows; packing fills each row with real tokens instead of padding: the tiny profile pads to
    # 160 tokens and its examples hold ~60, so a packed step carries more than twice the real tokens (exact
    # counts). Their wall-clock rates are not compared: the tests share the 2 cores with another worker, and in
    # one CI run the packed run's steps took 2.7x the seed's (1,284 vs 1,757 real tokens/s), so "higher" was noise.
    assert by_name["packing"]["tokens_seen"] > 2 * by_name["seed"]["tokens_seen"]
    assert all(r["real_tokens_per_s"] > 0 for r in saved["runs"])
    assert all(r["startup_s"] > 0 and r["host_peak_rss_mib"] > 0 for r in saved["runs"])
    text = Path(f"{out}.md").read_text()
    assert "command: `" in text and saved["info"]["versions"]["torch"] in text
    # The start-up breakdown counts from the benchmark's launch: its phases add up to the row's start-up.
    for row in saved["runs"]:
        phases = row["startup_phases_s"]
        assert list(phases)[:2] == ["process_start", "imports_done"] and phases["model_built"] >= 0
        until_first_step = sum(list(phases.values())[:list(phases).index("first_step_begin") + 1])
        assert until_first_step == pytest.approx(row["startup_s"], abs=0.2)
    assert "## Start-up, seconds per phase" in text


REFERENCE_SPEC = """
title = "The Trainer beside the plain loop, same flags"
steps = 8
logging_steps = 2
[[variant]]
name = "trainer"
flags = ["--padding", "packed", "--per-device-train-batch-size", "16", "--gradient-accumulation-steps", "1"]
[[variant]]
name = "reference loop"
runner = "reference"
adds = []
"""


@pytest.mark.slow
def test_bench_reference_loop_row_beside_the_trainer_row(tmp_path):
    """benchmarks/reference_loop.py (no Trainer) in the same invocation; make_it_fast.toml's reference rows add
    only --bf16 and fused AdamW (GPU-only here) and --torch-compile to the same flags."""
    spec, out = tmp_path / "reference.toml", tmp_path / "res"
    spec.write_text(REFERENCE_SPEC)
    result = subprocess.run(
        [sys.executable, "benchmarks/bench.py", str(spec), "--common", "--profile tiny", "--out", str(out),
         "--work", str(tmp_path / "runs")],
        cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trainer, reference = json.loads(Path(f"{out}.json").read_text())["runs"]
    assert reference["variant"] == "reference loop" and reference["status"] == "completed"
    assert reference["real_tokens_per_s"] > 0 and reference["step_s"] > 0 and reference["startup_s"] > 0
    assert reference["timed_steps"] == trainer["timed_steps"] == 2  # from the log at step 6 to the one at 8
    assert reference["mfu"] is None  # no GPU peak on a CPU
    # The same packed rows in the same batches (each 160 real tokens), whatever order each shuffles them in.
    assert reference["tokens_seen"] == trainer["tokens_seen"] and reference["tokens_seen"] % TINY_LENGTH == 0
    assert 0 < reference["final_eval_loss"] < 20
    made = {"make_it_fast": [v["name"] for v in tomllib.loads((REPO / "benchmarks/make_it_fast.toml").read_text())
                             ["variant"] if v.get("runner") == "reference"]}
    assert made["make_it_fast"] == ["reference loop (eager)", "reference loop (compiled)",
                                    "reference loop (flex attention)"]
    assert "| reference loop" in Path(f"{out}.md").read_text()


@pytest.mark.slow
def test_bench_alternates_repeats_and_states_the_overhead_with_its_spread(tmp_path):
    """logger_overhead.toml on the tiny model: A B then B A, and x_versus from the paired repeats."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench import table

    out = tmp_path / "overhead"
    pair = ["no loggers", "loggers (slurm/baseline.slurm)"]
    result = subprocess.run(
        [sys.executable, "benchmarks/bench.py", "benchmarks/logger_overhead.toml", "--common", "--profile tiny",
         "--steps", "10", "--repeats", "2", "--only", ",".join(pair), "--out", str(out),
         "--work", str(tmp_path / "runs")],
        cwd=REPO, env={**job_env(), "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = json.loads(Path(f"{out}.json").read_text())["runs"]
    assert [(r["repeat"], r["variant"]) for r in runs] == [(0, pair[0]), (0, pair[1]), (1, pair[1]), (1, pair[0])]
    assert all(r["status"] == "completed" and r["real_tokens_per_s"] > 0 for r in runs)
    tokens = {(r["repeat"], r["variant"]): r["real_tokens_per_s"] for r in runs}
    ratios = sorted(tokens[(k, pair[1])] / tokens[(k, pair[0])] for k in (0, 1))
    row = table(runs).set_index("variant").loc[pair[1]]
    assert row["x_versus"] == (f"{sum(ratios) / 2:.3f} ({ratios[0]:.3f}-{ratios[1]:.3f}, n=2) vs no loggers")
    low, high = sorted(tokens[(k, pair[1])] for k in (0, 1))
    assert row["tokens_per_s_range"] == f"{low:.1f}-{high:.1f}"
    assert "x_versus" in Path(f"{out}.md").read_text()
    assert {r["steps"] for r in runs} == {10} and "- 10 optimizer steps per run;" in Path(f"{out}.md").read_text()


@pytest.mark.slow
def test_torch_profiler_keeps_a_table_and_a_trace_of_steady_steps(tmp_path):
    manifest, losses = train_tiny(tmp_path, "profiled", "--torch-profiler", "--max-steps", "9")
    assert manifest["status"] == "completed" and len(losses) == 9
    run_dir = tmp_path / "profiled"
    top = (run_dir / "profile_top.txt").read_text()
    assert top.startswith("torch.profiler over 3 optimizer steps, after step 5; sorted by self_cpu_time_total")
    assert "Self CPU" in top and "aten::mm" in top  # the model's matrix products are among the operators
    with gzip.open(run_dir / "profile_trace.json.gz") as trace:
        events = json.load(trace)["traceEvents"]
    assert any(e.get("name") == "aten::mm" for e in events) and not (run_dir / "profile_trace.json").exists()
    # a run shorter than the window profiles its last steps (here all of them)
    train_tiny(tmp_path, "short", "--torch-profiler", "--max-steps", "2")
    assert (tmp_path / "short" / "profile_top.txt").read_text().startswith("torch.profiler over 2 optimizer steps, "
                                                                           "after step 0")


def test_torch_compile_drops_the_smaller_last_training_batch_only(tiny, tmp_path):
    """A smaller last batch is a new shape: under --torch-compile the model would compile again mid-run (80 s for
    bloom-560m on the H200, inside the profiled steps). Training drops it; evaluation keeps every example."""
    from transformers import Trainer
    from workshop.deepspeed.plan import prepare
    from workshop.train import drop_last_train_batch, training_arguments

    model, tokenizer, examples = tiny
    rows = tokenize(examples, tokenizer, TINY_LENGTH, pad=True)  # 12
    cfg = parse_args(["--profile", "tiny", "--per-device-train-batch-size", "4", "--per-device-eval-batch-size", "4",
                      "--output-dir", str(tmp_path)])
    plan = prepare(cfg)
    trainer = Trainer(model=model, args=training_arguments(cfg, plan), train_dataset=rows[:10], eval_dataset=rows[2:],
                      data_collator=collator(tokenizer, "max"))
    assert len(trainer.get_train_dataloader()) == 3  # 4 + 4 + 2
    drop_last_train_batch(trainer)
    assert len(trainer.get_train_dataloader()) == 2 and not trainer.args.dataloader_drop_last
    assert len(trainer.get_eval_dataloader()) == 3  # all 10 examples: 4 + 4 + 2
    fits = Trainer(model=model, args=training_arguments(cfg, plan), train_dataset=rows[:3], eval_dataset=rows[3:],
                   data_collator=collator(tokenizer, "max"))
    drop_last_train_batch(fits)  # fewer rows than a batch: nothing would be left to train on, so none is dropped
    assert len(fits.get_train_dataloader()) == 1


def test_torch_profiler_says_when_its_steps_were_compiling(tmp_path):
    """A profile whose window holds a (re)compilation shows the compiler, not steady steps: the table says so."""
    from workshop.profiling import ProfilerCallback

    def profile(work):
        callback = ProfilerCallback(tmp_path)
        callback.window = (5, 8)
        callback.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        callback.profiler.start()
        work()
        callback.profiler.stop()
        callback.write()
        return (tmp_path / "profile_top.txt").read_text()

    x = torch.randn(64, 64)
    compiled = torch.compile(lambda t: (t @ t).relu().sum())
    top = profile(lambda: compiled(x))
    assert top.startswith("warning: torch.compile was compiling during these steps (")
    assert profile(lambda: compiled(x)).startswith("torch.profiler over 3 optimizer steps")  # compiled already
