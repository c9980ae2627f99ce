"""The embedded offline assets: the invented SQuAD-format sample and the bloom-tiny tokenizer/config."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # effective when this file runs first; local_files_only below always

from workshop.sample_data import generate_squad, write_squad  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "workshop" / "assets" / "bloom-tiny"
PROMPT = "Question: {q} Context: {c} Answer: {a}"


def paragraphs(sample):
    return [p for article in sample["data"] for p in article["paragraphs"]]


def questions(sample):
    return [(p["context"], qa) for p in paragraphs(sample) for qa in p["qas"]]


@pytest.fixture(scope="module")
def sample():
    return generate_squad()


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(ASSETS, local_files_only=True)


# --- the sample ---

def test_same_seed_same_bytes_and_cli_agrees(tmp_path):
    write_squad(tmp_path / "a.json", seed=3)
    write_squad(tmp_path / "b.json", seed=3)
    subprocess.run([sys.executable, "-m", "workshop.sample_data", str(tmp_path / "cli.json"), "--seed", "3"],
                   cwd=REPO, check=True)
    first = (tmp_path / "a.json").read_bytes()
    assert first == (tmp_path / "b.json").read_bytes() == (tmp_path / "cli.json").read_bytes()
    assert json.loads(first) == generate_squad(seed=3)


def test_different_seeds_differ():
    assert generate_squad(seed=0) != generate_squad(seed=1)


def test_squad_v1_layout(sample):
    assert set(sample) == {"version", "data"}
    for article in sample["data"]:
        assert set(article) == {"title", "paragraphs"} and isinstance(article["title"], str)
        for p in article["paragraphs"]:
            assert set(p) == {"context", "qas"}
            for qa in p["qas"]:
                assert set(qa) == {"id", "question", "answers"} and len(qa["answers"]) == 1
                assert set(qa["answers"][0]) == {"text", "answer_start"}
                assert isinstance(qa["answers"][0]["answer_start"], int)


@pytest.mark.parametrize("seed", [0, 1, 7, 123])
def test_every_answer_is_the_span_it_points_at(seed):
    for context, qa in questions(generate_squad(seed)):
        answer = qa["answers"][0]
        start, text = answer["answer_start"], answer["text"]
        assert context[start:start + len(text)] == text, qa
        assert context.count(text) == 1, f"ambiguous answer {text!r} in {context!r}"
        assert qa["question"].endswith("?")


def test_counts(sample):
    ps = paragraphs(sample)
    assert len(ps) == 200
    # The lesson's default subset is 500 questions, so the default sample must hold at least that many.
    assert 500 <= len(questions(sample)) <= 600
    assert all(1 <= len(p["qas"]) <= 3 for p in ps)
    assert all(1 <= len(a["paragraphs"]) <= 3 for a in sample["data"])
    for p in ps:
        sentences = re.split(r"(?<=[.!?]) ", p["context"])
        assert 2 <= len(sentences) <= 5, p["context"]
    assert len(paragraphs(generate_squad(n_paragraphs=17))) == 17


def test_ids_and_titles_unique(sample):
    ids = [qa["id"] for _, qa in questions(sample)]
    assert len(ids) == len(set(ids))
    titles = [a["title"] for a in sample["data"]]
    assert len(titles) == len(set(titles))


def test_bad_paragraph_count_is_refused():
    with pytest.raises(ValueError, match="n_paragraphs"):
        generate_squad(n_paragraphs=0)


def test_ten_thousand_examples_distinct_deterministic_and_spans_correct():
    from workshop.data import load_squad

    rows = load_squad(10000, source="embedded")
    assert len(rows) == 10000 and rows == load_squad(10000, source="embedded")
    assert len({(r["question"], r["context"]) for r in rows}) == 10000
    assert len({r["id"] for r in rows}) == 10000
    for r in rows:
        start, text = r["answers"]["answer_start"][0], r["answers"]["text"][0]
        assert r["context"][start:start + len(text)] == text and r["context"].count(text) == 1
    # Growing the sample only appends: the lesson's default 500 are the same as those of the 200-paragraph sample.
    assert load_squad(500, source="embedded") == rows[:500]


def test_a_subset_larger_than_the_embedded_sample_is_a_clear_error():
    from workshop.config import WorkshopError
    from workshop.data import load_squad
    from workshop.sample_data import MAX_PARAGRAPHS

    with pytest.raises(WorkshopError, match=r"--subset-size 50000 is larger than the dataset \(\d+ examples in 'embedded'\)"):
        load_squad(50000, source="embedded")
    with pytest.raises(ValueError, match="n_paragraphs"):
        generate_squad(n_paragraphs=MAX_PARAGRAPHS + 1)


# --- the shipped bloom-tiny assets ---

def test_tokenizer_loads_offline_with_bloom_special_ids(tokenizer):
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) \
        == (0, 1, 2, 3)
    assert tokenizer.padding_side == "left"
    assert tokenizer.model_max_length == 512
    assert (ASSETS / "tokenizer.json").stat().st_size < 1_000_000


@pytest.mark.parametrize("seed", [0, 99])  # 99: name combinations the tokenizer was not trained on
def test_sample_prompts_encode_without_unk_and_round_trip(tokenizer, seed):
    for context, qa in questions(generate_squad(seed))[:60]:
        text = PROMPT.format(q=qa["question"], c=context, a=qa["answers"][0]["text"])
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == text
        assert len(ids) < len(text) / 2  # learned merges, not one token per byte
        # workshop.data appends the eos token as text; it must become the single id 2.
        assert tokenizer(text + tokenizer.eos_token)["input_ids"] == ids + [2]


def test_padding_is_left_with_id_3(tokenizer):
    batch = tokenizer(["short", "a much longer line of text than the first"], padding=True)
    short_ids, short_mask = batch["input_ids"][0], batch["attention_mask"][0]
    n_pad = short_mask.count(0)
    assert n_pad > 0 and short_ids[:n_pad] == [3] * n_pad and short_mask[n_pad:] == [1] * (len(short_ids) - n_pad)


def test_config_builds_a_tiny_bloom(tokenizer):
    import torch
    from transformers import AutoConfig, BloomConfig, BloomForCausalLM

    config = AutoConfig.from_pretrained(ASSETS, local_files_only=True)
    assert config.model_type == "bloom" and isinstance(config, BloomConfig)
    assert config.vocab_size == len(tokenizer)
    assert (config.hidden_size, config.n_layer, config.n_head) == (64, 2, 4)
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 2, 3)
    model = BloomForCausalLM(BloomConfig.from_pretrained(ASSETS, local_files_only=True))
    batch = tokenizer(["Question: Who? Context: Ada Korley. Answer: Ada Korley", "short"], padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, labels=batch["input_ids"])
    assert out.logits.shape[-1] == len(tokenizer) and torch.isfinite(out.loss)


def test_rebuilding_reproduces_the_shipped_assets(tmp_path):
    """The shipped files must be what tools/build_tokenizer.py makes, so they cannot drift from it."""
    subprocess.run([sys.executable, str(REPO / "tools" / "build_tokenizer.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)

    def model_of(folder):
        model = json.loads((folder / "tokenizer.json").read_text())["model"]
        # tokenizers serialises merges as "a b" strings in older releases and as pairs in newer ones.
        merges = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
        return model["vocab"], merges

    assert model_of(tmp_path) == model_of(ASSETS)
    for name in ("tokenizer_config.json", "special_tokens_map.json", "config.json"):
        assert json.loads((tmp_path / name).read_text()) == json.loads((ASSETS / name).read_text()), name
