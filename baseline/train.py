"""Lesson 1: fine-tune BLOOM on a 500-example SQuAD subset with the plain Hugging Face Trainer.

    python baseline/train.py                      # bigscience/bloom-560m, the lesson's settings
    python baseline/train.py --profile tiny       # embedded tiny model and data: a laptop, no network
    python baseline/train.py --help               # every setting, each overridable

The training code itself is `workshop/train.py`: read `train()` there top to bottom (its flags: workshop/config.py).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from workshop.entry import main  # noqa: E402

if __name__ == "__main__":
    main(lesson="baseline")
