"""Lesson 5: the baseline's fine-tune in fp32, fp16 and bf16 (plain Trainer or any ZeRO stage), with and without
gradient checkpointing.

    python precision_and_checkpointing/train.py --precision bf16 --gradient-checkpointing
    deepspeed --num_gpus=1 precision_and_checkpointing/train.py --precision fp32 \
        --ds-config deepspeed_single_gpu/configs/stage2.json

Compared with baseline/train.py the only change is the lesson's name, which files its runs under this lesson's
tables; the knobs are the flags `--precision` and `--gradient-checkpointing` of the one training entry.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from workshop.entry import main  # noqa: E402

if __name__ == "__main__":
    # New Code #: this lesson's runs fill its own tables (workshop/lessons/precision_and_checkpointing.py)
    main(lesson="precision_and_checkpointing")
