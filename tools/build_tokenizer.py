"""Build the embedded `bloom-tiny` assets: a small byte-level BPE tokenizer and a 2-layer BloomConfig.

The real BLOOM tokenizer has a 250k vocabulary and must come from the Hugging Face Hub. For offline runs
and tests the workshop ships this stand-in instead, trained on its own invented sample
(workshop/sample_data.py) in the lesson's prompt format. Special tokens sit at BLOOM's ids
(<unk>=0, <s>=1, </s>=2, <pad>=3) and padding is on the left, as in bigscience/bloom-560m, so code written
for the real model runs unchanged on this one.

    python tools/build_tokenizer.py                # rewrites workshop/assets/bloom-tiny/
    python tools/build_tokenizer.py --out /tmp/x   # somewhere else (the tests compare the two)
"""

import argparse
import json
import os
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

# Run as a plain script from a checkout, so make the repository's package importable.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from workshop.sample_data import all_words, generate_squad  # noqa: E402

DEFAULT_OUT = os.path.join(REPO, "workshop", "assets", "bloom-tiny")
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]  # list order = ids 0..3, as in BLOOM
VOCAB_SIZE = 2048
# The lesson's prompt (workshop/data.py formats training examples the same way).
PROMPT = "Question: {question} Context: {context} Answer: {answer}"


def training_texts(seed=0):
    sample = generate_squad(seed)
    for article in sample["data"]:
        yield article["title"]
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                yield PROMPT.format(question=qa["question"], context=paragraph["context"],
                                    answer=qa["answers"][0]["text"])
    # Every list entry, so names that other seeds glue together still split into learned pieces.
    yield " ".join(all_words())


def train_tokenizer():
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    # Byte level, like BLOOM: any text encodes, so <unk> never appears in practice.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(training_texts(), trainer=trainer)
    for token_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == token_id, f"{token} landed at id {tokenizer.token_to_id(token)}"
    return tokenizer


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def build(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    tokenizer = train_tokenizer()
    tokenizer.save(os.path.join(out_dir, "tokenizer.json"))
    # Transformers 5 maps BloomTokenizerFast onto its generic tokenizers backend; 4.x has the class itself.
    write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "tokenizer_class": "BloomTokenizerFast",
        "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
        "padding_side": "left",
        "model_max_length": 512,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
    })
    write_json(os.path.join(out_dir, "special_tokens_map.json"),
               {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"})
    # Written by hand rather than by BloomConfig.save_pretrained, so the file does not change with the
    # installed transformers version; BloomConfig fills in every other field with its defaults.
    write_json(os.path.join(out_dir, "config.json"), {
        "model_type": "bloom",
        "architectures": ["BloomForCausalLM"],
        "vocab_size": tokenizer.get_vocab_size(),
        "hidden_size": 64,
        "n_layer": 2,
        "n_head": 4,
        "unk_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3,
    })
    return tokenizer.get_vocab_size()


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train the bloom-tiny tokenizer and write its config files.")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: the shipped assets)")
    args = parser.parse_args(argv)
    vocab_size = build(args.out)
    print(f"wrote {args.out} (vocabulary of {vocab_size} tokens)")


if __name__ == "__main__":
    main()
