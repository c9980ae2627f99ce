"""SQuAD for causal-LM fine-tuning: `Question: … Context: … Answer: …`, 512 tokens, labels = input ids.

Sources: the Hub's `squad` (the lesson's path), a local SQuAD v1.1 JSON file, or the embedded sample
that `workshop.sample_data` generates (no network). Examples are plain lists of dicts: the Trainer takes any
sequence, and only the Hub path needs the `datasets` library.
"""
import json
import random

from transformers import DataCollatorForSeq2Seq, default_data_collator

from workshop.errors import WorkshopError


def squad_json_to_records(squad: dict) -> list[dict]:
    """Flatten SQuAD v1.1 JSON into rows shaped like the Hub's `squad` dataset."""
    rows = []
    for article in squad["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                rows.append({
                    "id": qa["id"],
                    "title": article["title"],
                    "context": paragraph["context"],
                    "question": qa["question"],
                    "answers": {"text": [a["text"] for a in qa["answers"]],
                                "answer_start": [a["answer_start"] for a in qa["answers"]]},
                })
    return rows


def load_squad(subset_size: int = 500, source: str = "hub") -> list[dict]:
    """The first `subset_size` SQuAD training examples from `source` ("hub", "embedded" or a JSON path)."""
    if source == "hub":
        examples = _load_hub_squad(subset_size)
    elif source == "embedded":
        from workshop.sample_data import generate_squad, paragraphs_for
        # grows to the subset asked for
        examples = squad_json_to_records(generate_squad(n_paragraphs=paragraphs_for(subset_size)))
    else:
        examples = _read_squad_file(source)
    if subset_size > len(examples):
        raise WorkshopError(f"--subset-size {subset_size} is larger than the dataset ({len(examples)} examples "
                            f"in {source!r})")
    return examples[:subset_size]


def _read_squad_file(source: str) -> list[dict]:
    try:
        with open(source) as f:
            return squad_json_to_records(json.load(f))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise WorkshopError(f"--data {source}: not a readable SQuAD v1.1 JSON file ({type(err).__name__}: "
                            f"{str(err)[:200]})") from err


def _load_hub_squad(subset_size: int) -> list[dict]:
    from datasets import load_dataset

    try:
        # The split slice reads only the subset; an over-large subset shows up as a shorter list.
        return load_dataset("squad", split=f"train[:{subset_size}]").to_list()
    except (OSError, ConnectionError, ValueError) as err:
        raise WorkshopError(
            f"cannot load the 'squad' dataset: not in the Hugging Face cache and the Hub is unreachable "
            f"({type(err).__name__}). On a login node with internet run `python -m workshop.prefetch`, "
            "then resubmit; or use --data embedded / --profile tiny.") from err


def format_prompt(question: str, context: str, answer: str | None = None) -> str:
    """The lesson's prompt; without an answer it is what the model completes at generation time."""
    prompt = f"Question: {question} Context: {context} Answer:"
    return prompt if answer is None else f"{prompt} {answer}"


def tokenize(examples, tokenizer, max_length: int = 512, pad: bool = True) -> list[dict]:
    """Truncate each prompt to max_length and, with `pad`, pad it there; labels are the input ids, -100 on padding.

    Without `pad` rows keep their own length and the collator pads each batch (`collator()`).
    """
    # The end-of-text token teaches the model where an answer stops.
    texts = [format_prompt(e["question"], e["context"], e["answers"]["text"][0]) + tokenizer.eos_token
             for e in examples]
    encoded = tokenizer(texts, max_length=max_length, truncation=True,
                        padding="max_length" if pad else False)
    rows = []
    for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"]):
        labels = [tok if keep else -100 for tok, keep in zip(ids, mask)]
        rows.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return rows


def pack(rows, block_size: int) -> list[dict]:
    """Concatenate unpadded rows end to end and cut blocks of block_size: every token is a real one.

    Examples then share a block (attention crosses their boundary, as in pre-training; each still ends with
    end-of-text). The last, partial block is dropped.
    """
    stream = [tok for row in rows for tok in row["input_ids"]]
    blocks = [stream[i:i + block_size] for i in range(0, len(stream) - block_size + 1, block_size)]
    return [{"input_ids": b, "attention_mask": [1] * block_size, "labels": list(b)} for b in blocks]


def collator(tokenizer, padding: str):
    """Batches for the Trainer: fixed-length rows stack as they are; others are padded to the batch's longest."""
    if padding == "max":
        return default_data_collator
    # Padding to a multiple of 8 keeps matrix shapes friendly to tensor cores and limits recompiles.
    return DataCollatorForSeq2Seq(tokenizer, padding="longest", pad_to_multiple_of=8, label_pad_token_id=-100)


def real_tokens(rows) -> int:
    return sum(sum(row["attention_mask"]) for row in rows)


def split(examples, eval_fraction: float = 0.1, seed: int = 42):
    """Return (train, eval): a seeded shuffle of the subset, the last `eval_fraction` held out."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(examples) * eval_fraction))
    return [examples[i] for i in order[n_eval:]], [examples[i] for i in order[:n_eval]]
