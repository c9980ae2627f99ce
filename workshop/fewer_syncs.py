"""--fewer-syncs (make it fast): the Trainer's per-micro-batch host work that a hand-written loop does not do.

After every micro-batch transformers' Trainer (5.x) counts the real tokens as `attention_mask.sum()` on the GPU and
reads it back with `.item()`: a host-device sync that makes the CPU wait for the step it has just queued, so it
cannot queue the next one meanwhile. It also recounts the model's parameters (`num_parameters`, a walk over every
tensor) for its FLOP total. This Trainer keeps the token count on the device and reads it once per log, and counts
the parameters once. The logged counts are the same; only when they are read back changes.
"""
import torch
from transformers import Trainer


class FewerSyncsTrainer(Trainer):
    _tokens_pending = None  # a device tensor: real tokens of the micro-batches since the last log
    _flops_per_token = None

    def _track_num_input_tokens(self, inputs):
        if (self.args.include_num_input_tokens_seen != "non_padding" or "attention_mask" not in inputs
                or self.args.world_size > 1):  # several ranks: their counts must be gathered, as the Trainer does
            return super()._track_num_input_tokens(inputs)
        count = inputs["attention_mask"].sum()
        self._tokens_pending = count if self._tokens_pending is None else self._tokens_pending + count

    def log(self, logs, *args, **kwargs):
        self.flush_token_count()  # before the Trainer copies the count into the log and the callbacks read it
        return super().log(logs, *args, **kwargs)

    def _save_checkpoint(self, *args, **kwargs):
        self.flush_token_count()  # a resumed run starts from the saved count
        return super()._save_checkpoint(*args, **kwargs)

    def flush_token_count(self):
        if self._tokens_pending is not None:
            self.state.num_input_tokens_seen += int(self._tokens_pending.item())
            self._tokens_pending = None

    def floating_point_ops(self, inputs):
        name = getattr(self.model, "main_input_name", "input_ids")
        if self._flops_per_token is None:  # the Trainer's own formula for a one-token input, once
            self._flops_per_token = super().floating_point_ops({name: torch.empty(1)})
        return self._flops_per_token * inputs[name].numel() if name in inputs else 0
