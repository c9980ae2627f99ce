"""Lesson 7: FSDP2 beside ZeRO. The same fine-tune, sharded by PyTorch's FSDP2 instead of DeepSpeed's ZeRO.

    torchrun --nproc_per_node 2 fsdp/train.py --fsdp full_shard          # ~ ZeRO-3 (shard_grad_op ~ ZeRO-2)
    torchrun --nproc_per_node 2 fsdp/train.py --fsdp full_shard_offload  # ~ ZeRO-3 with CPU offload
    deepspeed --num_gpus 2 fsdp/train.py --ds-config deepspeed_single_gpu/configs/stage3.json   # the ZeRO row
    python -m workshop.export --run-dir logs/<run>                       # either run's checkpoint, as a plain model

What wrapped the model is in the run's manifest (`wrapping`): workshop/fsdp.py says why the workshop applies
fully_shard itself, and the lesson's tables are in workshop/lessons/fsdp.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from workshop.entry import main  # noqa: E402

if __name__ == "__main__":
    # New Code #: the runs are filed as lesson 7's (its tables); --fsdp or --ds-config says which sharding
    main(lesson="fsdp")
    # End New Code #
