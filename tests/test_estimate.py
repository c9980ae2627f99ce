"""workshop.estimate: parameter counts against transformers' BLOOM, memory against DeepSpeed's printouts."""

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workshop.deepspeed.estimate import MODELS, ZENFLOW_TOPK_RATIO, bloom_params, bloom_shape, estimate_table, param_counts


def _meta_bloom(model):
    from transformers import BloomConfig, BloomForCausalLM

    with torch.device("meta"):  # shapes only: nothing allocated, nothing downloaded
        return BloomForCausalLM(BloomConfig(**bloom_shape(model)))


@pytest.mark.parametrize("model", MODELS)
def test_param_counts_match_transformers_bloom(model):
    net = _meta_bloom(model)
    total, largest = bloom_params(bloom_shape(model))
    assert total == sum(p.numel() for p in net.parameters())  # parameters() lists the tied LM head once
    # DeepSpeed's largest layer: the module with the most parameters of its own
    assert largest == max(sum(p.numel() for p in m.parameters(recurse=False)) for m in net.modules())


@pytest.mark.parametrize("model", MODELS)
def test_meta_device_counts_are_the_closed_form(model):
    from workshop.deepspeed.estimate import param_counts

    assert param_counts(model) == bloom_params(bloom_shape(model))  # what estimate_table now uses, any family


def test_bloom_560m_is_the_559_2m_of_the_published_model():
    assert round(sum(p.numel() for p in _meta_bloom("bloom-560m").parameters()) / 1e6, 1) == 559.2
    assert round(bloom_params(bloom_shape("bloom-560m"))[0] / 1e6, 1) == 559.2


def _deepspeed_printout(function, *args, gpus):
    """Run one of DeepSpeed's *_all_cold estimators and parse its table: {options: (cpu GB, gpu GB)}."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        function(*args, num_gpus_per_node=gpus)
    rows = re.findall(r"^\s*([\d.]+)GB \|\s*([\d.]+)GB \| (.+)$", out.getvalue(), re.MULTILINE)
    # Python 3.11+ prints the enum as "OffloadDeviceEnum.cpu" there; keep the "cpu"
    return {re.sub(r"\s+|OffloadDeviceEnum\.", "", options): (float(cpu), float(gpu)) for cpu, gpu, options in rows}


@pytest.mark.parametrize("gpus", [1, 2, 4])
def test_zero2_and_zero3_rows_reproduce_deepspeeds_own_printout(gpus):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs_all_cold
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs_all_cold

    total, largest = bloom_params(bloom_shape("bloom-560m"))
    table = estimate_table("bloom-560m", [gpus]).round(2)
    printed2 = _deepspeed_printout(estimate_zero2_model_states_mem_needs_all_cold, total, gpus=gpus)
    printed3 = _deepspeed_printout(estimate_zero3_model_states_mem_needs_all_cold, total, largest, gpus=gpus)
    assert len(printed2) == 2 and len(printed3) == 6

    for row in table[(table.stage == 2) & (table.source == "deepspeed")].itertuples():
        device = "cpu" if row.offload == "optimizer" else "none"
        assert printed2[f"offload_optimizer={device}"] == (row.cpu_gib_per_node, row.gpu_gib_per_gpu)
    for row in table[table.stage == 3].itertuples():
        param = "cpu" if row.offload == "optimizer+params" else "none"
        optimizer = "none" if row.offload == "none" else "cpu"
        key = f"offload_param={param},offload_optimizer={optimizer},zero_init={int(row.zero_init == 'yes')}"
        assert printed3[key] == (row.cpu_gib_per_node, row.gpu_gib_per_gpu)


def test_bloom_560m_zero2_offload_needs_about_1_04_gib_per_gpu():
    table = estimate_table("bloom-560m", [1])
    row = table[(table.stage == 2) & (table.offload == "optimizer")].iloc[0]
    assert round(row.gpu_gib_per_gpu, 2) == 1.04
    assert row.source == "deepspeed" and "stage2_offload" in row.configs


def test_formula_rows_follow_deepspeeds_accounting():
    table = estimate_table("bloom-1b7", [1, 4]).set_index(["gpus", "stage", "offload", "zero_init"])
    gib = table.gpu_gib_per_gpu
    # one GPU: nothing to partition with, so ZeRO 0, 1 and DeepSpeed's ZeRO 2 need the same
    assert gib[1, 0, "none", ""] == pytest.approx(gib[1, 1, "none", ""])
    assert gib[1, 0, "none", ""] == pytest.approx(gib[1, 2, "none", ""])
    # four GPUs: ZeRO 1 splits the fp32 states, ZeRO 2 the gradients as well
    assert gib[4, 0, "none", ""] > gib[4, 1, "none", ""] > gib[4, 2, "none", ""]
    assert set(table.loc[(slice(None), [0, 1]), "source"]) == {"formula"}


def test_zenflow_row_is_classic_offload_plus_zenflows_buffers():
    """ZenFlow adds 16 host bytes a parameter (second gradient buffer, stale weights, second Adam moments) and the
    top-k columns' fp32 states on the GPU to DeepSpeed's ZeRO-2 offload estimate, which has no ZenFlow term."""
    total = param_counts("bloom-1b7")[0]
    table = estimate_table("bloom-1b7", [1]).set_index("offload")
    classic, zenflow = table.loc["optimizer"], table.loc["optimizer+zenflow"]
    classic = classic[classic.stage == 2].iloc[0]
    assert zenflow.configs == "stage2_zenflow" and zenflow.source == "deepspeed+zenflow"
    assert zenflow.cpu_gib_per_node - classic.cpu_gib_per_node == pytest.approx(16 * total / 2**30)
    assert zenflow.gpu_gib_per_gpu - classic.gpu_gib_per_gpu == pytest.approx(16 * 0.05 * total / 2**30)
    shipped = json.loads((Path(__file__).resolve().parents[1] / "deepspeed_single_gpu/configs/stage2_zenflow.json")
                         .read_text())
    assert shipped["zero_optimization"]["zenflow"]["topk_ratio"] == ZENFLOW_TOPK_RATIO


def test_every_shipped_config_has_a_row():
    shipped = {p.stem for p in (Path(__file__).resolve().parents[1] / "deepspeed_single_gpu/configs").glob("*.json")}
    listed = {name.strip() for names in estimate_table("bloom-560m").configs for name in names.split(",")}
    # DeepSpeed has no estimator for NVMe offload: workshop.deepspeed.preflight adds its pinned buffers to the stage-3 rows
    assert listed - {""} == shipped - {"stage3_offload_nvme"}


@pytest.mark.parametrize("fmt", ["json", "csv", "markdown"])
def test_cli_prints_the_table_and_nothing_of_deepspeeds(fmt):
    run = subprocess.run([sys.executable, "-m", "workshop.estimate", "--model", "bloom-560m", "--gpus", "1", "2",
                          "--format", fmt], capture_output=True, text=True, check=True)
    assert run.stderr == ""
    assert "[WARNING]" not in run.stdout and "Estimated memory" not in run.stdout
    if fmt == "json":
        rows = json.loads(run.stdout)
        assert len(rows) == 2 * 12 and {r["gpus"] for r in rows} == {1, 2}
    elif fmt == "csv":
        assert run.stdout.splitlines()[0].startswith("model,params_m,")
    else:
        header = run.stdout.splitlines()[2]
        assert run.stdout.startswith("bloom-560m: 559.2 M parameters") and "stage" in header and "source" in header
