"""Lesson 4, make it fast: the baseline's fine-tune with the speed-ups the lesson adds one at a time.

    python make_it_fast/train.py --padding packed --per-device-train-batch-size 16 --gradient-accumulation-steps 1 \
        --optim adamw_torch_fused --torch-compile --bf16
    bash slurm/fast.slurm --profile tiny          # the lesson's flags, set by its script

Compared with baseline/train.py the only change is the lesson's name, which files its runs under this lesson's
tables; each speed-up is a flag of the one training entry (slurm/fast.slurm lists them, one comment each, and
benchmarks/make_it_fast.toml measures them one at a time).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from workshop.entry import main  # noqa: E402

if __name__ == "__main__":
    # New Code #: this lesson's runs fill its own tables (workshop/lessons/make_it_fast.py)
    main(lesson="make_it_fast")
