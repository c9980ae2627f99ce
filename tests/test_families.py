"""Any causal LM: every listed family's tiny variant trains through the lesson's entry point on CPU, under the plain
Trainer and under ZeRO-2; the manifest's parameter count and FLOPs per token are the model's own; the tables name
the model; a Hub id loads from an offline Hugging Face cache; bad input is one `error:` line, exit 2.

Run as a script (`python tests/test_families.py OUT_DIR`) this file is the trainer: one process trains every family
twice (plain, then ZeRO-2) and tries the bad inputs, so the whole module pays one interpreter start-up.
"""
import contextlib
import io
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ["llama", "mistral", "qwen2", "opt", "gpt_neox", "falcon", "gemma"]
ZERO2 = str(REPO / "deepspeed_single_gpu" / "configs" / "stage2.json")
CACHED = "workshop-test/llama-tiny"  # a Hub id that exists only in the test's offline cache
BIN_ONLY = "workshop-test/bin-only"  # the same, its weights pickled (pytorch_model.bin) instead of safetensors
LEGACY = "workshoplegacy-tiny"  # an id without an organisation, as gpt2 is
STEPS = 4


def _train(argv, **lesson):
    """workshop.train.main in this process; (exit status, stderr, engine class and ZeRO stage of the trainer)."""
    import workshop.train as entry

    seen = {}
    real_train = entry.train

    def train(cfg, run):  # the trainer main() built: which engine really trained
        trainer = real_train(cfg, run)
        wrapped = trainer.model_wrapped
        seen.update(engine=type(wrapped).__name__,
                    stage=wrapped.zero_optimization_stage() if hasattr(wrapped, "zero_optimization_stage") else None)
        return trainer

    entry.train, err, code = train, io.StringIO(), 0
    try:
        with contextlib.redirect_stderr(err):
            entry.main(argv, **lesson)
    except SystemExit as stop:
        code = stop.code
    finally:
        entry.train = real_train
    return {"code": code, "stderr": err.getvalue(), **seen}


def run_all(out: Path):
    short = ["--profile", "tiny", "--subset-size", "40", "--max-steps", str(STEPS), "--logging-steps", "1",
             "--eval-strategy", "no", "--save-strategy", "no", "--no-save-final"]
    results = {}
    for mode in ("plain", "zero2"):
        if mode == "zero2":  # one DeepSpeed process, as the `deepspeed` launcher would start it
            os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=os.environ.get("TEST_MASTER_PORT", "29533"))
        for family in FAMILIES:
            started = time.time()
            flags = [*short, "--model", f"{family}-tiny", "--run-dir", str(out / mode / family),
                     "--output-dir", str(out / "outputs" / mode / family)]
            if mode == "zero2":
                result = _train([*flags, "--deepspeed", ZERO2], lesson="deepspeed_single_gpu", require_deepspeed=True)
            else:
                result = _train(flags)
            results[f"{mode}/{family}"] = {**result, "seconds": round(time.time() - started, 1)}
    # the real Hub path, from the offline cache the test wrote: pretrained weights of a Hub id
    results["cached"] = _train([*short, "--model", CACHED, "--run-dir", str(out / "cached")])
    results["cached-random"] = _train([*short, "--model", CACHED, "--init", "random",
                                       "--run-dir", str(out / "cached-random")])
    results["legacy"] = _train([*short, "--model", LEGACY, "--run-dir", str(out / "legacy")])
    results["bin-only"] = _train([*short[:2], "--model", BIN_ONLY, "--run-dir", str(out / "bin-only")])
    results["not-cached"] = _train([*short[:2], "--model", "workshop-test/absent", "--run-dir", str(out / "absent")])
    results["random-uncached"] = _train([*short, "--model", "workshop-test/absent", "--init", "random",
                                         "--run-dir", str(out / "random-uncached")])
    results["unknown-family"] = _train([*short, "--model", "mamba-tiny", "--init", "random"])
    from workshop.model import load_model, parameter_count, tokenizer_record

    for family in FAMILIES:  # the published ~1B shapes, offline: on the meta device, so nothing is allocated
        model, tokenizer = load_model(family, init="random", device="meta")
        results[f"published/{family}"] = {"parameters": parameter_count(model), "class": type(model).__name__,
                                          "pad_token_id": model.config.pad_token_id,
                                          "tokenizer": tokenizer_record(tokenizer, model)}
    (out / "results.json").write_text(json.dumps(results, indent=1))


def write_offline_cache(hf_home: Path, repo_id: str, seed=7, pickled=False):
    """A Hugging Face cache as snapshot_download leaves it (refs/main -> snapshots/<commit>/), holding a tiny
    LLaMA's safetensors, config and tokenizer: what `python -m workshop.prefetch` puts on a shared file system."""
    from workshop.model import load_model, save_model

    commit = "0" * 40
    root = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    model, tokenizer = load_model("llama-tiny", seed=seed)
    save_model(model, tokenizer, snapshot)
    if pickled:  # an older checkpoint: only pytorch_model.bin
        (snapshot / "model.safetensors").unlink()
        torch.save(model.state_dict(), snapshot / "pytorch_model.bin")
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    return model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from test_deepspeed_lesson import free_port

    out = tmp_path_factory.mktemp("families")
    cached_model = write_offline_cache(out / "hf", CACHED)
    write_offline_cache(out / "hf", BIN_ONLY, pickled=True)
    write_offline_cache(out / "hf", LEGACY, seed=8)
    env = {**os.environ, "HF_HOME": str(out / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TEST_MASTER_PORT": str(free_port()), "PYTHONPATH": str(REPO)}
    started = time.time()
    done = subprocess.run([sys.executable, __file__, str(out)], cwd=out, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"[test_families] {len(FAMILIES)} families x (plain, ZeRO-2) + the cache cases: "
          f"{time.time() - started:.0f} s")
    return out, json.loads((out / "results.json").read_text()), cached_model


def manifest(path):
    return json.loads((path / "manifest.json").read_text())


def losses(path):
    events = [json.loads(line) for line in (path / "log_history.jsonl").read_text().splitlines()]
    return [event["loss"] for event in events if "loss" in event]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.slow
def test_family_trains_plain_and_under_zero2(trained, family):
    out, results, _ = trained
    for mode, engine, stage in (("plain", None, None), ("zero2", "DeepSpeedEngine", 2)):
        result, run = results[f"{mode}/{family}"], out / mode / family
        assert result["code"] == 0, result["stderr"][-2000:]
        assert result.get("stage") == stage and (engine is None) == (result["engine"] != "DeepSpeedEngine")
        found = manifest(run)
        assert found["status"] == "completed" and found["model"] == f"{family}-tiny"
        assert found["steps_done"] == STEPS
        assert found["preflight"]["host_gib"] > 0  # DeepSpeed's estimate, counted from this family's config
        seen = losses(run)
        assert len(seen) == STEPS and all(math.isfinite(x) for x in seen) and seen[-1] < seen[0], seen
        # the embedded tokenizer, and a vocabulary that matches it, said so in the manifest
        assert found["tokenizer"] == {"source": "embedded (workshop/assets/bloom-tiny)", "ids": 2048,
                                      "model_vocab": 2048, "padding_side": "left"}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.slow
def test_manifest_counts_and_flops_are_the_models_own(trained, family):
    from workshop.deepspeed.estimate import estimate_table
    from workshop.model import load_model
    from workshop.speed import flops_per_token

    out, _, _ = trained
    model, _ = load_model(f"{family}-tiny")
    own = sum(p.numel() for p in model.parameters())
    found = manifest(out / "plain" / family)
    assert found["parameters"] == own
    assert estimate_table(f"{family}-tiny").params_m.iloc[0] * 1e6 == pytest.approx(own)
    # the MFU numerator: the formula on this model's config and lookups, at the run's mean row length
    non_lookup = own - sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding)
                           and m.weight is not model.get_output_embeddings().weight)
    expected = flops_per_token(model.config, non_lookup, found["mean_train_row_tokens"])
    assert found["speed"]["flops_per_token"] == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("name", ["bloom-tiny", *(f"{family}-tiny" for family in FAMILIES)])
def test_flops_per_token_is_what_pytorch_counts(name):
    """6 N + 12 L d T against PyTorch's own count of one forward and backward (eager attention, whose score
    matmuls the counter sees). The rest is biases and norms, which the formula counts as multiplies."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForCausalLM

    from workshop.model import model_config, resolve_model
    from workshop.speed import flops_per_token, matmul_parameters

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(model_config(resolve_model(name)), attn_implementation="eager")
    ids = torch.randint(4, 2000, (2, 96))
    counter = FlopCounterMode(display=False)
    with counter:
        model(input_ids=ids, labels=ids).loss.backward()
    counted = counter.get_total_flops() / ids.numel()
    assert flops_per_token(model.config, matmul_parameters(model), 96) == pytest.approx(counted, rel=0.015)


# Published sizes (model cards): Pythia's and OPT's to the parameter, the others as their cards round them.
PUBLISHED = {"llama": (1.1e9, 0.05), "mistral": (1.8e9, 0.05), "qwen2": (1.54e9, 0.01), "opt": (1_315_758_080, 0),
             "gpt_neox": (1_011_781_632, 0), "falcon": (1.3e9, 0.05), "gemma": (1.0e9, 0.01)}


@pytest.mark.parametrize("family", FAMILIES)
def test_published_shapes_have_the_published_size_and_deepspeeds_count(family):
    from deepspeed.runtime.zero.stage3 import model_to_params

    from workshop.deepspeed.estimate import param_counts
    from workshop.model import FAMILIES as SPECS, load_model, resolve_model

    total = param_counts(family)[0]  # the family's name is its ~1B member, built on the meta device
    size, tolerance = PUBLISHED[family]
    assert total == pytest.approx(size, rel=tolerance) if tolerance else total == size
    assert resolve_model(family) == SPECS[family]["hub_id"]
    # DeepSpeed's own counting of a live model (its *_all_live estimators) gives the same pair
    model, _ = load_model(f"{family}-tiny")
    assert param_counts(f"{family}-tiny") == model_to_params(model)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.slow
def test_random_init_of_a_published_shape_needs_no_download(trained, family):
    from workshop.deepspeed.estimate import param_counts
    from workshop.shapes import FAMILIES as SPECS

    _, results, _ = trained
    built = results[f"published/{family}"]
    assert built["parameters"] == param_counts(family)[0]
    assert built["class"] == SPECS[family]["config"].removesuffix("Config").removesuffix("Text") + "ForCausalLM"
    # no cached tokenizer: the embedded one, its ids inside the published vocabulary, its pad id in the config
    assert built["tokenizer"]["source"].startswith("embedded") and built["pad_token_id"] == 3
    assert built["tokenizer"]["model_vocab"] == SPECS[family]["shape"]["vocab_size"] > built["tokenizer"]["ids"]


@pytest.mark.slow
def test_tables_name_each_model(trained):
    from workshop.fill_tables import build_tables
    from workshop.report.shapes import model_name

    out, _, _ = trained
    part2 = build_tables([out / "zero2"])["deepspeed_single_gpu_part2"]
    expected = {"llama": "LLaMA", "mistral": "Mistral", "qwen2": "Qwen2", "opt": "OPT", "gpt_neox": "GPT-NeoX",
                "falcon": "Falcon", "gemma": "Gemma 3"}
    assert sorted(part2["Model and Data"]) == sorted(f"{name} Tiny, 40 subset" for name in expected.values())
    by_run = build_tables([out / "zero2"], by_run=True)["deepspeed_single_gpu_part2"]
    assert all(isinstance(v, float) and v > 0 for v in by_run["DeepSpeed estimate MiB (model states)"])
    for model_id, name in (("bigscience/bloom-560m", "Bloom 560M"), ("EleutherAI/pythia-1b", "Pythia 1B"),
                           ("Qwen/Qwen2-1.5B", "Qwen2 1.5B"), ("TinyLlama/TinyLlama_v1.1", "TinyLlama v1.1")):
        assert model_name(model_id) == name


@pytest.mark.slow
def test_a_hub_id_trains_from_the_offline_cache(trained):
    out, results, cached_model = trained
    assert results["cached"]["code"] == 0, results["cached"]["stderr"][-2000:]
    found = manifest(out / "cached")
    assert found["model"] == CACHED and found["init"] == "pretrained" and found["status"] == "completed"
    assert found["parameters"] == sum(p.numel() for p in cached_model.parameters())
    assert found["tokenizer"]["source"] == CACHED  # the cache's, not the embedded folder


@pytest.mark.slow
def test_a_hub_id_without_an_organisation_trains_from_the_cache(trained):
    """The Hub's oldest ids (gpt2, distilgpt2) have no `org/`; their cache folder is models--<name>."""
    out, results, _ = trained
    assert results["legacy"]["code"] == 0, results["legacy"]["stderr"][-2000:]
    found = manifest(out / "legacy")
    assert found["model"] == LEGACY and found["status"] == "completed" and found["tokenizer"]["source"] == LEGACY


@pytest.mark.slow
def test_random_init_of_a_cached_hub_id_uses_its_config(trained):
    out, results, cached_model = trained
    assert results["cached-random"]["code"] == 0, results["cached-random"]["stderr"][-2000:]
    found = manifest(out / "cached-random")
    assert found["init"] == "random" and found["status"] == "completed"
    assert found["parameters"] == sum(p.numel() for p in cached_model.parameters())


@pytest.mark.slow
def test_pickled_weights_are_refused(trained):
    out, results, _ = trained
    result = results["bin-only"]
    assert result["code"] == 2 and "Traceback" not in result["stderr"]
    assert f"error: cannot load {BIN_ONLY}: it has no safetensors weights" in result["stderr"]
    assert manifest(out / "bin-only")["status"] == "failed"


@pytest.mark.slow
def test_a_hub_id_not_cached_says_to_prefetch(trained):
    out, results, _ = trained
    result = results["not-cached"]
    assert result["code"] == 2 and result["stderr"].count("error:") == 1 and "Traceback" not in result["stderr"]
    assert "python -m workshop.prefetch --model workshop-test/absent" in result["stderr"]
    assert manifest(out / "absent")["status"] == "failed"


@pytest.mark.slow
def test_random_init_of_an_unknown_family_lists_the_known_ones(trained):
    from workshop.shapes import FAMILIES as SPECS

    _, results, _ = trained
    for case in ("random-uncached", "unknown-family"):
        result = results[case]
        errors = [line for line in result["stderr"].splitlines() if line.startswith("error:")]
        assert result["code"] == 2 and len(errors) == 1 and "Traceback" not in result["stderr"], result["stderr"]
        for family, spec in SPECS.items():
            assert spec["hub_id"] in errors[0] and family in errors[0]


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    run_all(Path(sys.argv[1]))


@pytest.mark.parametrize("size", ["560m", "1b7", "3b", "7b1"])
def test_random_init_of_each_bloom_size_with_the_embedded_tokenizer(size):
    """The lesson's GPU runs (`--model 560m --init random`, no cached tokenizer) go through this path; built on
    the meta device, so 7b1 costs nothing. It once passed the special-token ids twice (TypeError on the H200)."""
    from workshop.deepspeed.estimate import param_counts
    from workshop.model import EMBEDDED_IDS, load_model, parameter_count

    model, tokenizer = load_model(size, init="random", device="meta")
    assert Path(tokenizer.name_or_path).name == "bloom-tiny"
    assert {key: getattr(model.config, key) for key in EMBEDDED_IDS} == EMBEDDED_IDS
    assert parameter_count(model) == param_counts(size)[0]
