"""A seconds-long Trainer run whose stdout becomes a test fixture for workshop.logparse.

A random 2-layer BloomForCausalLM on a few dozen synthetic token sequences (no tokenizer, no hub), 3 epochs,
eval and save every epoch, logging every 2 steps. Works with transformers 4.x and 5.x, so the same script
captures both stdout dialects. Usage: python tools/tiny_trainer_run.py OUTPUT_DIR
It also writes OUTPUT_DIR/log_history.jsonl (trainer.state.log_history, one event a line) so a real run
folder can be assembled from it; see tools/capture_trainer_4x.sh.
"""

import json
import sys

import torch
import transformers
from transformers import BloomConfig, BloomForCausalLM, Trainer, TrainingArguments


def synthetic_examples(n, seq_len=16, vocab=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, seq_len), generator=g)
    return [{"input_ids": row, "attention_mask": torch.ones_like(row), "labels": row.clone()} for row in ids]


def main(out_dir):
    torch.manual_seed(0)
    config = BloomConfig(vocab_size=128, hidden_size=32, n_layer=2, n_head=2)
    model = BloomForCausalLM(config)
    # 43 train examples at batch 4 -> 11 steps/epoch, so the epoch fractions in the logs are not round.
    train, evals = synthetic_examples(43, seed=0), synthetic_examples(12, seed=1)
    args = TrainingArguments(
        output_dir=out_dir,
        num_train_epochs=3,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_steps=2,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=evals)
    trainer.train()
    with open(f"{out_dir}/log_history.jsonl", "w") as f:
        for event in trainer.state.log_history:
            f.write(json.dumps(event) + "\n")
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main(sys.argv[1])
