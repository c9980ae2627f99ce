"""Lesson 6: LoRA and QLoRA: the baseline's fine-tune with the base model frozen and small adapters trained.

    python lora/train.py                                  # bigscience/bloom-560m, LoRA rank 16 on every linear layer
    python lora/train.py --profile tiny                   # embedded tiny model and data: a laptop, no network
    python lora/train.py --peft qlora --bf16              # the same adapters over a 4-bit NF4 base (bitsandbytes)
    python lora/train.py --peft none                      # full fine-tuning, filed under this lesson to compare
    bash slurm/lora.slurm stage3 --profile tiny           # under ZeRO 3 (deepspeed_single_gpu/configs/stage3.json)

The adapters are Hugging Face peft's (workshop/peft_model.py); the lesson's learning rate, 10x the baseline's, is
its recipe in workshop/config.py. `python -m workshop.merge --run-dir logs/<run>` folds the adapter into the base.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from workshop.entry import main  # noqa: E402

if __name__ == "__main__":
    # New Code #: the lesson's recipe (workshop/config.py RECIPES["lora"]): --peft lora, learning rate 5e-4
    main(lesson="lora")
