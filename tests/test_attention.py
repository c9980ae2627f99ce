"""`--attention sdpa` and `--attention flex`: BLOOM's attention core through scaled_dot_product_attention or
FlexAttention, checked against the stock module on the tiny model (fp32, CPU; the `gpu` cases on CUDA, where flex
is the compiled kernel), and a real Trainer run through `python -m workshop.train` with each."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workshop.bloom_attention import IMPLEMENTATIONS, dense_alibi, flex_alibi, use_attention
from workshop.config import WorkshopError, parse_args
from workshop.data import collator, load_squad, tokenize
from workshop.model import load_model

REPO = Path(__file__).resolve().parents[1]
# fp32 on CPU: the two paths sum the same terms in a different order (SDPA's math kernel vs baddbmm + softmax)
TOLERANCE = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def padded_batch():
    _, tokenizer = load_model("tiny")
    rows = tokenize(load_squad(6, source="embedded"), tokenizer, 160, pad=False)
    batch = collator(tokenizer, "longest")(rows)
    assert (batch["attention_mask"] == 0).any(), "the batch must hold padding"
    return batch


ATTENTIONS = list(IMPLEMENTATIONS)  # sdpa, flex


def pair(device="cpu", attention="sdpa"):
    stock, _ = load_model("tiny", seed=0)
    sdpa, _ = load_model("tiny", seed=0)
    stock, sdpa = stock.to(device), sdpa.to(device)
    assert use_attention(sdpa, attention) == stock.config.n_layer
    assert all(type(block.self_attention) is IMPLEMENTATIONS[attention] for block in sdpa.transformer.h)
    return stock, sdpa


def relative_error(actual, expected):
    return ((actual - expected).norm() / expected.norm()).item()


def assert_near(actual, expected, device, name=""):
    """On a CPU element by element. On a GPU the relative error of the whole tensor, ||actual - expected|| /
    ||expected||: on the H200 (2026-12-03) the fp32 logits differed by up to 4.6e-3 in 13% of the elements, about
    the share of the batch's left-padding positions (docs/results/make_it_fast_h200-2026-12-03-b/README.md)."""
    if device == "cpu":
        torch.testing.assert_close(actual, expected, **TOLERANCE, msg=name or None)
        return
    relative = relative_error(actual, expected)
    print(f"{name or 'logits'}: relative error {relative:.2e}")
    assert relative < 1e-3, f"{name}: relative error {relative:.2e}"


# On a GPU sdpa's memory-efficient kernel and flex's compiled one run (on a CPU sdpa's math kernel and flex's
# mods evaluated densely: see workshop/bloom_attention.py).
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_attention_matches_stock_outputs_and_gradients_with_padding(padded_batch, device, attention):
    stock, sdpa = pair(device, attention)
    padded_batch = {k: v.to(device) for k, v in padded_batch.items()}
    out_stock, out_sdpa = stock(**padded_batch), sdpa(**padded_batch)
    # Every position, padding included: a left-padding row's output predicts the first real token.
    if device == "cuda":  # where they differ: real queries, or left padding's fully masked ones
        real = padded_batch["attention_mask"].bool()
        for name, where in [("real queries", real), ("fully masked queries", ~real)]:
            error = relative_error(out_sdpa.logits[where], out_stock.logits[where])
            print(f"{attention} logits at {name}: relative error {error:.2e}")
    assert_near(out_sdpa.logits, out_stock.logits, device)
    assert_near(out_sdpa.loss, out_stock.loss, device, "loss")
    out_stock.loss.backward()
    out_sdpa.loss.backward()
    for (name, a), b in zip(stock.named_parameters(), sdpa.parameters()):
        assert_near(b.grad, a.grad, device, name)
    assert stock.state_dict().keys() == sdpa.state_dict().keys()  # checkpoints stay interchangeable


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_attention_module_matches_stock_module_directly(attention):
    """One layer, called as BloomBlock calls it: the bias and mask from the model's own builders."""
    stock, sdpa = pair(attention=attention)
    hidden = torch.randn(2, 9, stock.config.hidden_size, requires_grad=True)
    mask2d = torch.tensor([[1] * 9, [0, 0, 0] + [1] * 6])  # the second row left-padded
    alibi = stock.transformer.build_alibi_tensor(mask2d, stock.config.n_head, torch.float32)
    causal = torch.full((9, 9), torch.finfo(torch.float32).min).triu(1)
    mask = (causal + (1 - mask2d[:, None, None, :]) * torch.finfo(torch.float32).min).clamp(
        min=torch.finfo(torch.float32).min)
    outputs = []
    for model in (stock, sdpa):
        layer = model.transformer.h[0].self_attention
        out, _ = layer(hidden, hidden, alibi, mask)
        (grad,) = torch.autograd.grad(out.square().sum(), hidden)
        outputs.append((out, grad))
    (out_a, grad_a), (out_b, grad_b) = outputs
    assert torch.isfinite(out_b).all()  # fully masked rows (left padding) give no NaN
    torch.testing.assert_close(out_b, out_a, **TOLERANCE)
    torch.testing.assert_close(grad_b, grad_a, **TOLERANCE)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_generation_with_the_cache_matches_stock(padded_batch, attention):
    stock, sdpa = pair(attention=attention)
    prompt = {k: padded_batch[k][:2, :20] for k in ("input_ids", "attention_mask")}
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=3)
    assert torch.equal(sdpa.generate(**prompt, **kwargs), stock.generate(**prompt, **kwargs))


def test_attention_flag_default_and_bad_value(capsys):
    assert parse_args([]).attention == "eager"  # existing runs unchanged
    assert parse_args(["--attention", "sdpa"]).attention == "sdpa"
    assert parse_args(["--attention", "flex"]).attention == "flex"
    with pytest.raises(SystemExit) as stop:
        parse_args(["--attention", "flash"])
    assert stop.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "invalid choice: 'flash'" in errors[0]


def test_sdpa_refuses_a_model_without_bloom_attention():
    with pytest.raises(WorkshopError, match="BLOOM's attention"):
        use_attention(torch.nn.Linear(2, 2), "sdpa")
    assert use_attention(torch.nn.Linear(2, 2), "eager") == 0


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_trainer_run_with_attention(tmp_path, attention):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "workshop.train", "--profile", "tiny", "--attention", attention, "--padding", "longest",
         "--max-steps", "4", "--save-strategy", "no", "--no-save-final", "--run-dir", str(run_dir),
         "--output-dir", str(tmp_path / "out")],
        cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["settings"]["attention"] == attention
    assert manifest["attention_layers_replaced"] == 2  # the tiny model's two layers
    events = [json.loads(line) for line in (run_dir / "log_history.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if "loss" in e] + [e["eval_loss"] for e in events if "eval_loss" in e]
    assert losses and all(0 < loss < 20 for loss in losses)


def test_flex_mods_mean_the_same_to_flex_attention():
    """The CPU path evaluates flex's score_mod and mask_mod densely; FlexAttention's own implementation (forward
    only on a CPU) reads them the same: ALiBi, the causal and padding block mask, a fully masked (left-padding)
    query, and queries that are the last positions of a longer key sequence (a prompt after a cache)."""
    stock, _ = load_model("tiny", seed=0)
    heads = stock.config.n_head
    mask2d = torch.tensor([[1] * 40, [0] * 7 + [1] * 33, [0] * 39 + [1]])  # no padding, some, all but one
    alibi = stock.transformer.build_alibi_tensor(mask2d, heads, torch.float32).view(3, heads, 40)
    minimum = torch.finfo(torch.float32).min
    causal = torch.full((40, 40), minimum).triu(1)
    mask = (causal + (1 - mask2d[:, None, None, :]) * minimum).clamp(min=minimum)
    for q_length in (40, 24):  # every position, then the last 24 queries over all 40 keys
        query = torch.randn(3, heads, q_length, 16)
        key, value = torch.randn(3, heads, 40, 16), torch.randn(3, heads, 40, 16)
        rows = mask[:, :, 40 - q_length:]
        with torch.no_grad():
            dense = dense_alibi(query, key, value, alibi, rows, 0.25)
            flex = flex_alibi(query, key, value, alibi, rows, 0.25)
        assert torch.isfinite(dense).all()
        torch.testing.assert_close(flex, dense, **TOLERANCE)
    # the fully masked queries of the last row (all but its last position) get the mean of every value
    torch.testing.assert_close(dense[2, :, :-1], value[2].mean(1, keepdim=True).expand(heads, q_length - 1, 16),
                               **TOLERANCE)
