"""Lesson 2: the baseline's fine-tune under DeepSpeed ZeRO on one GPU.

    deepspeed --num_gpus=1 deepspeed_single_gpu/train.py --ds-config deepspeed_single_gpu/configs/stage2_offload.json
    deepspeed --num_gpus=1 deepspeed_single_gpu/train.py --ds-config .../stage3_offload.json --model 1b7 --subset 100

Compared with baseline/train.py the only change is the DeepSpeed config: the Trainer hands the model,
optimizer and batches to a DeepSpeed engine built from that JSON file. `--model` (tiny, 560m, 1b7, 3b, 7b1)
and `--subset` replace editing the code to change model or data size.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from workshop.entry import main  # noqa: E402

if __name__ == "__main__":
    # New Code #: this lesson's recipe (workshop/config.py, RECIPES) refuses to run without a DeepSpeed config
    main(lesson="deepspeed_single_gpu")
