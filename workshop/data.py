"""SQuAD for causal-LM fine-tuning: `Question: … Context: … Answer: …`, padded to 512, labels = input ids.

Sources: the Hub's `squad` (the lesson's path), a local SQuAD v1.1 JSON file, or the embedded sample
that `workshop.sample_data` generates (no network).
"""
import json

from datasets import Dataset

from workshop.config import WorkshopError


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


def load_squad(subset_size: int = 500, source: str = "hub") -> Dataset:
    """The first `subset_size` SQuAD training examples from `source` ("hub", "embedded" or a JSON path)."""
    if source == "hub":
        dataset = _load_hub_squad()
    else:
        if source == "embedded":
            from workshop.sample_data import generate_squad
            squad = generate_squad()
        else:
            with open(source) as f:
                squad = json.load(f)
        dataset = Dataset.from_list(squad_json_to_records(squad))
    if subset_size > len(dataset):
        raise WorkshopError(f"--subset-size {subset_size} is larger than the dataset ({len(dataset)} examples "
                            f"in {source!r})")
    return dataset.select(range(subset_size))


def _load_hub_squad() -> Dataset:
    from datasets import load_dataset

    try:
        return load_dataset("squad", split="train")
    except (OSError, ConnectionError, ValueError) as err:
        raise WorkshopError(
            f"cannot load the 'squad' dataset: not in the Hugging Face cache and the Hub is unreachable "
            f"({type(err).__name__}). On a login node with internet run `python -m workshop.prefetch`, "
            "then resubmit; or use --data embedded / --profile tiny.") from err


def format_prompt(question: str, context: str, answer: str | None = None) -> str:
    """The lesson's prompt; without an answer it is what the model completes at generation time."""
    prompt = f"Question: {question} Context: {context} Answer:"
    return prompt if answer is None else f"{prompt} {answer}"


def tokenize(dataset: Dataset, tokenizer, max_length: int = 512) -> Dataset:
    """Pad/truncate each prompt to max_length; labels are the input ids with padding set to -100."""
    def encode(example):
        text = format_prompt(example["question"], example["context"], example["answers"]["text"][0])
        # The end-of-text token teaches the model where an answer stops.
        enc = tokenizer(text + tokenizer.eos_token, max_length=max_length, truncation=True, padding="max_length")
        enc["labels"] = [tok if mask else -100 for tok, mask in zip(enc["input_ids"], enc["attention_mask"])]
        return enc

    return dataset.map(encode, remove_columns=dataset.column_names)


def split(dataset: Dataset, eval_fraction: float = 0.1, seed: int = 42):
    """Return (train, eval): a seeded shuffle split of the subset."""
    parts = dataset.train_test_split(test_size=eval_fraction, seed=seed)
    return parts["train"], parts["test"]
