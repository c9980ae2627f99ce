import json

import pytest
import torch
from transformers import BloomForCausalLM

from workshop.config import WorkshopError
from workshop.data import format_prompt, load_squad, split, squad_json_to_records, tokenize
from workshop.model import TINY_DIR, load_model, load_saved, random_init_config, resolve_model, save_model
from workshop.sample_data import generate_squad


@pytest.mark.parametrize("name", ["560m", "bloom-560m", "bigscience/bloom-560m"])
def test_model_names_resolve(name):
    assert resolve_model(name) == "bigscience/bloom-560m"
    assert resolve_model("tiny") == "bloom-tiny"


def test_unknown_model_name():
    with pytest.raises(WorkshopError, match="unknown model 'bloom-2b'"):
        resolve_model("bloom-2b")
    with pytest.raises(WorkshopError, match="unknown model 'bigscience/bloom-2b'"):
        resolve_model("bigscience/bloom-2b")  # a BLOOM size that does not exist, not some other Hub repository


@pytest.mark.parametrize("name, resolved", [("bigscience/bloomz-560m", "bigscience/bloomz-560m"),
                                            ("Qwen/Qwen2-1.5B", "Qwen/Qwen2-1.5B"), ("llama", "TinyLlama/TinyLlama_v1.1"),
                                            ("gemma-tiny", "gemma-tiny")])
def test_any_hub_id_and_family_names_resolve(name, resolved):
    assert resolve_model(name) == resolved


@pytest.mark.parametrize("model_id, millions", [("bigscience/bloom-560m", 559.2), ("bigscience/bloom-1b7", 1722.4),
                                                ("bigscience/bloom-3b", 3002.6), ("bigscience/bloom-7b1", 7069.0)])
def test_random_init_has_the_published_shapes(model_id, millions):
    with torch.device("meta"):  # shapes only: no memory is allocated
        model = BloomForCausalLM(random_init_config(model_id))
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions


def test_save_load_round_trip(tmp_path):
    model, tokenizer = load_model("bloom-tiny")
    save_model(model, tokenizer, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists()
    loaded, loaded_tok = load_saved(tmp_path / "m")
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    ids = tokenizer("Question: who? Context: here. Answer: me", return_tensors="pt").input_ids
    assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert loaded_tok("Answer: me").input_ids == tokenizer("Answer: me").input_ids


def test_tiny_tokenizer_ships_with_the_package():
    assert (TINY_DIR / "tokenizer.json").exists()
    _, tokenizer = load_model("tiny")
    assert tokenizer.pad_token_id == 3 and tokenizer.eos_token_id == 2


def test_prompt_text():
    assert format_prompt("Who?", "Ann did.", "Ann") == "Question: Who? Context: Ann did. Answer: Ann"
    assert format_prompt("Who?", "Ann did.") == "Question: Who? Context: Ann did. Answer:"


def test_embedded_answers_are_at_answer_start():
    dataset = load_squad(500, source="embedded")
    assert len(dataset) == 500
    for row in dataset:
        start, text = row["answers"]["answer_start"][0], row["answers"]["text"][0]
        assert row["context"][start:start + len(text)] == text


def test_tokenized_labels_mask_padding():
    _, tokenizer = load_model("tiny")
    dataset = tokenize(load_squad(8, source="embedded"), tokenizer, max_length=160)
    row = dataset[0]
    assert len(row["input_ids"]) == 160
    for tok, mask, label in zip(row["input_ids"], row["attention_mask"], row["labels"]):
        assert label == (tok if mask else -100)
    assert -100 in row["labels"], "160 tokens is longer than a sample prompt, so there is padding"
    text = tokenizer.decode([t for t, m in zip(row["input_ids"], row["attention_mask"]) if m])
    first = load_squad(1, source="embedded")[0]
    assert text == format_prompt(first["question"], first["context"], first["answers"]["text"][0]) + "</s>"


def test_truncation_to_max_length():
    _, tokenizer = load_model("tiny")
    row = tokenize(load_squad(2, source="embedded"), tokenizer, max_length=16)[0]
    assert len(row["input_ids"]) == 16 and all(m == 1 for m in row["attention_mask"])


def test_local_squad_json_and_split(tmp_path):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(generate_squad(seed=3, n_paragraphs=40)))
    dataset = load_squad(50, source=str(path))
    assert dataset[0]["id"] == squad_json_to_records(json.loads(path.read_text()))[0]["id"]
    train, held_out = split(dataset, 0.1, seed=42)
    assert (len(train), len(held_out)) == (45, 5)
    assert not {e["id"] for e in train} & {e["id"] for e in held_out}
    assert split(dataset, 0.1, seed=42) == (train, held_out)  # the same seed, the same split


def test_subset_larger_than_dataset():
    with pytest.raises(WorkshopError, match="larger than the dataset"):
        load_squad(50_000, source="embedded")  # the embedded sample grows to about 13,000


def test_the_laptop_model_is_a_100m_bloom_built_offline_whose_adam_states_dominate():
    """--profile laptop: BLOOM's architecture at ~100M parameters on the embedded tokenizer, seeded random weights
    (no Hub); its fp32 model states with Adam (16 bytes a parameter) are well over a CPU process's ~0.6 GiB of
    libraries."""
    from workshop.config import parse_args

    cfg = parse_args(["--profile", "laptop"])
    assert (cfg.model, cfg.data, resolve_model(cfg.model)) == ("bloom-laptop", "embedded", "bloom-laptop")
    model, tokenizer = load_model("bloom-laptop", init="pretrained", seed=3)
    again, _ = load_model("bloom-laptop", seed=3)
    assert isinstance(model, BloomForCausalLM) and model.config.vocab_size == len(tokenizer) == 2048
    total = sum(p.numel() for p in model.parameters())
    assert 95e6 < total < 105e6 and 16 * total / 2**30 > 1.4
    assert torch.equal(model.transformer.h[0].mlp.dense_4h_to_h.weight, again.transformer.h[0].mlp.dense_4h_to_h.weight)
