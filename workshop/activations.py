"""What gradient checkpointing saves, on any device: the bytes of activations one micro-batch keeps for its backward
pass, read from autograd itself (torch.autograd.graph.saved_tensors_hooks sees every tensor a forward saves).

manifest.json: "activation_peak_bytes": the largest, over the run's micro-batches, of the bytes the forward pass
left saved for the backward pass (each tensor's memory once; parameters, which are saved too but are model states,
left out). It is exact, so it shows checkpointing's saving on a CPU, where no allocator peak is recorded: a
checkpointed block keeps only its input, and recomputes the rest in the backward pass. Temporaries that a forward
frees before it ends are not in it, nor is the backward pass's own working memory. Not recorded under
--torch-compile (a compiled graph saves its own tensors).
"""
import torch
from transformers import TrainerCallback


class ActivationsCallback(TrainerCallback):
    def __init__(self, run, model):
        self.run, self.model = run, model
        self.saved, self.seen, self.peak = 0, set(), 0
        self.hooks, self.context = [], None
        self.weights = set()  # the parameters' memory: a view of a weight saved for backward is no activation

    def _pack(self, tensor):
        if not isinstance(tensor, torch.nn.Parameter) and tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in self.seen and storage.data_ptr() not in self.weights:
                self.seen.add(storage.data_ptr())
                self.saved += storage.nbytes()
        return tensor

    def _forward_begins(self, module, args):
        self.saved, self.seen = 0, set()

    def _forward_ends(self, module, args, output):
        if torch.is_grad_enabled():  # a training forward (evaluation saves nothing)
            self.peak = max(self.peak, self.saved)

    def on_train_begin(self, args, state, control, **kwargs):
        if args.torch_compile:
            return
        # FSDP2's parameters are DTensors: their storage is this process's shard
        self.weights = {getattr(p, "_local_tensor", p).untyped_storage().data_ptr() for p in self.model.parameters()}
        self.hooks = [self.model.register_forward_pre_hook(self._forward_begins),
                      self.model.register_forward_hook(self._forward_ends)]
        self.context = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)
        self.context.__enter__()

    def on_train_end(self, args, state, control, **kwargs):
        if self.context is None:
            return
        self.context.__exit__(None, None, None)
        for hook in self.hooks:
            hook.remove()
        self.context = None
        self.run.update(activation_peak_bytes=self.peak)
