"""Checkpoints that move: a run's sharded checkpoint as a plain Hugging Face model, or as DeepSpeed's universal
checkpoint that another ZeRO stage or number of processes can resume.

    python -m workshop.export --run-dir logs/<run>                the last whole checkpoint -> <run-dir>/exported
    python -m workshop.export --run-dir logs/<run> --checkpoint outputs/<run>/checkpoint-20 --out my-model
    python -m workshop.export --run-dir logs/<run> --universal    ds_to_universal, beside the checkpoint's own state

A ZeRO checkpoint's weights are the fp32 master weights in the optimizer's shards (DeepSpeed's zero_to_fp32 joins
them: `get_fp32_state_dict_from_zero_checkpoint`); its model.safetensors is whatever the Trainer's save wrote, which
under ZeRO-3 without `stage3_gather_16bit_weights_on_model_save` is empty `Size([0])` tensors. An FSDP2 run's
checkpoint is PyTorch's sharded DCP state (workshop/fsdp.py's format). Either way the export is reloaded with
`from_pretrained` and its logits are compared with the model the weights were read into: `export.json` beside it
says how far apart they are, how long the conversion took and how large the result is.

With --universal, `training --resume <checkpoint>` sees `latest_universal` and loads it with DeepSpeed's
`load_universal_checkpoint` (workshop.export.use_universal), whatever stage and process count the run now has.
"""
import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from workshop.errors import WorkshopError
from workshop.run_settings import read_settings

PROBE_IDS = [[3, 17, 42, 99, 7, 250, 11, 5, 64, 128, 31, 2]]  # token ids every vocabulary has (the tiny one: 300)


def find_checkpoint(run_dir: Path, checkpoint=None) -> Path:
    """The checkpoint to export: the one named, else the run's last whole checkpoint-N."""
    if not run_dir.is_dir():
        raise WorkshopError(f"--run-dir {run_dir}: no such folder")
    settings = read_settings(run_dir)
    from workshop.guards import last_whole_checkpoint  # transformers: after the checks that need none
    found = checkpoint or last_whole_checkpoint(settings["output_dir"])
    if found is None:
        raise WorkshopError(f"{run_dir} has no whole checkpoint in its output folder {settings['output_dir']} (a run "
                            "with --save-strategy no saves none; a relative folder is relative to where it ran)")
    if not Path(found).is_dir():
        raise WorkshopError(f"--checkpoint {found}: no such folder")
    return Path(found)


def checkpoint_format(checkpoint: Path) -> str:
    """deepspeed (a `latest` tag and global_step*/ shards), dcp (FSDP2's sharded state) or plain (already a model)."""
    if (checkpoint / "latest").is_file() and any(checkpoint.glob("global_step*")):
        return "deepspeed"
    if (checkpoint / "fsdp_dcp" / ".metadata").is_file():  # workshop.fsdp.DCP_FOLDER
        return "dcp"
    if (checkpoint / "model.safetensors").is_file() or any(checkpoint.glob("model-*.safetensors")):
        return "plain"
    raise WorkshopError(f"{checkpoint} holds no checkpoint this command can read (neither DeepSpeed's global_step*/, "
                        "FSDP's sharded state, nor a model.safetensors)")


def read_weights(checkpoint: Path, kind: str) -> dict:
    """The full, unsharded fp32 state dict of the checkpoint's model."""
    if kind == "deepspeed":
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint))
    if kind == "dcp":
        from workshop.fsdp import read_dcp_weights

        return read_dcp_weights(checkpoint)
    from safetensors.torch import load_file

    return {key: value for path in sorted(checkpoint.glob("model*.safetensors"))
            for key, value in load_file(path).items()}


def model_with(checkpoint: Path, weights: dict):
    """The checkpoint's architecture (its config.json) holding `weights`; refuses any weight left missing."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(checkpoint)
    torch.manual_seed(0)  # (every weight is then overwritten, or the export is refused)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # a tied output layer is saved once, as the input embedding: it shares that tensor's storage
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {params[name].data_ptr() for name in weights if name in params}
    left = [name for name in missing if name in params and params[name].data_ptr() not in loaded] + list(unexpected)
    empty = [name for name, param in model.named_parameters() if param.numel() == 0]
    if left or empty:
        raise WorkshopError(f"{checkpoint}: the weights do not fit {type(model).__name__}: "
                            f"{', '.join((left + empty)[:5])} missing, unexpected or empty")
    return model.eval()


def logits(model):
    import torch

    with torch.no_grad():
        return model(torch.tensor(PROBE_IDS)).logits.float()


def export(run_dir, checkpoint=None, out=None) -> dict:
    """Write the checkpoint's model as a plain Hugging Face folder; returns (and writes) its export.json record."""
    checkpoint = find_checkpoint(Path(run_dir), checkpoint)  # before transformers loads: a wrong folder is quick
    from transformers import AutoTokenizer

    from workshop.model import load_saved

    kind = checkpoint_format(checkpoint)
    out = Path(out or Path(run_dir) / "exported")
    started = time.perf_counter()
    model = model_with(checkpoint, read_weights(checkpoint, kind))
    read_s = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(out)
    convert_s = time.perf_counter() - started
    reloaded = load_saved(out)[0].eval()
    difference = (logits(reloaded) - logits(model)).abs().max().item()
    record = {"checkpoint": str(checkpoint), "format": kind, "step": _step(checkpoint), "out": str(out),
              "parameters": sum(p.numel() for p in reloaded.parameters()), "dtype": str(reloaded.dtype),
              "read_s": round(read_s, 3), "convert_s": round(convert_s, 3),
              "checkpoint_bytes": _bytes(checkpoint), "export_bytes": _bytes(out),
              "reloaded_logits_max_abs_diff": difference}
    if difference > 1e-5 * max(1.0, logits(model).abs().max().item()):
        raise WorkshopError(f"the exported model's logits differ from the checkpoint's by {difference:.3g}: "
                            f"{out} is not the trained model")
    (out / "export.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def to_universal(run_dir, checkpoint=None) -> dict:
    """DeepSpeed's universal checkpoint of a ZeRO checkpoint, written beside its own state (global_stepN_universal
    and latest_universal), so `--resume <checkpoint>` loads it under any stage and number of processes."""
    checkpoint = find_checkpoint(Path(run_dir), checkpoint)
    if checkpoint_format(checkpoint) != "deepspeed":
        raise WorkshopError(f"--universal: {checkpoint} is no DeepSpeed checkpoint (no `latest` and global_step*/)")
    from workshop.checkpoint_seal import check_trusted, seal

    check_trusted(checkpoint)  # the converter unpickles it, as a resume would
    tag = (checkpoint / "latest").read_text().strip()
    started = time.perf_counter()
    # DeepSpeed's own converter, as its documentation runs it; one worker each: a class's laptop has few cores.
    # The Trainer's saves lack the `universal_checkpoint_info` a Megatron-DeepSpeed client writes: the converter
    # injects it (--inject_missing_state)
    done = subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
                           str(checkpoint / tag), "--output_folder", str(checkpoint / f"{tag}_universal"),
                           "--num_extract_workers", "1", "--num_merge_workers", "1", "--inject_missing_state"],
                          capture_output=True, text=True)
    if done.returncode != 0:  # nothing half-written left for a resume to find
        shutil.rmtree(checkpoint / f"{tag}_universal", ignore_errors=True)
        (checkpoint / "latest_universal").unlink(missing_ok=True)
        raise WorkshopError(f"ds_to_universal failed on {checkpoint / tag}: "
                            f"{(done.stderr.strip().splitlines() or ['no message'])[-1]}")
    fit_every_stage(checkpoint / f"{tag}_universal")
    seal(checkpoint)  # this user's own conversion of a checkpoint that was trusted: the resume may load it
    return {"checkpoint": str(checkpoint), "universal": str(checkpoint / f"{tag}_universal"),
            "convert_s": round(time.perf_counter() - started, 3), "bytes": _bytes(checkpoint / f"{tag}_universal")}


def fit_every_stage(universal: Path):
    """A universal folder any ZeRO stage loads. DeepSpeed 0.19's converter keeps the source stage's layout, which
    the other stage's loader cannot read: ZeRO-3 looks for `zero_pp_rank_0_mp_rank_00_model_states.pt` (ZeRO 0-2:
    `mp_rank_00_model_states.pt`, engine._get_ckpt_name), and reads the Adam step and hyperparameters from
    `optimizer_state_dict` in zero/optimizer_state.pt, which a ZeRO-2 source keeps as `param_groups` and each
    parameter's step.pt. Both are added here from what the converter wrote; nothing is changed."""
    import torch

    for states in universal.glob("*mp_rank_*_model_states.pt"):
        rank = states.name.split("mp_rank_")[1]
        for name in (f"mp_rank_{rank}", f"zero_pp_rank_0_mp_rank_{rank}"):
            if not (universal / name).exists():
                shutil.copy2(states, universal / name)
    optimizer = universal / "zero" / "optimizer_state.pt"
    state = torch.load(optimizer, weights_only=False)  # written a moment ago by the converter from a sealed checkpoint
    if "optimizer_state_dict" not in state and "param_groups" in state:
        step = torch.load(next((universal / "zero").glob("*/step.pt")), weights_only=False)
        state["optimizer_state_dict"] = {"state": {0: {"step": step}}, "param_groups": state["param_groups"]}
        torch.save(state, optimizer)


def use_universal(resume: str | None, ds_config: dict | None) -> bool:
    """Before the Trainer exists: a --resume checkpoint that has a universal copy (--universal) is loaded through it
    (`checkpoint.load_universal`), so a ZeRO-2 run of 2 processes goes on under ZeRO-3 on 1. True when it is."""
    if not resume or resume in ("auto", "never") or not (Path(resume) / "latest_universal").is_file():
        return False
    if ds_config is None:
        raise WorkshopError(f"--resume {resume} is a DeepSpeed universal checkpoint: resume it with a DeepSpeed "
                            "config (--ds-config), under any ZeRO stage")
    ds_config.setdefault("checkpoint", {})["load_universal"] = True
    print(f"[workshop] resuming through DeepSpeed's universal checkpoint in {resume} (any stage, any number of "
          "processes)", flush=True)
    return True


def _step(checkpoint: Path):
    state = checkpoint / "trainer_state.json"
    return json.loads(state.read_text()).get("global_step") if state.is_file() else None


def _bytes(folder: Path) -> int:
    from workshop.save_times import folder_bytes

    return folder_bytes(Path(folder))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m workshop.export", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--run-dir", required=True, help="the run folder (logs/<run>) whose checkpoint to export")
    parser.add_argument("--checkpoint", help="a checkpoint-N folder (default: the run's last whole one)")
    parser.add_argument("--out", help="where the Hugging Face model goes (default: <run-dir>/exported)")
    parser.add_argument("--universal", action="store_true",
                        help="write DeepSpeed's universal checkpoint beside the checkpoint instead")
    args = parser.parse_args(argv)
    try:
        if args.universal:
            record = to_universal(args.run_dir, args.checkpoint)
            print(f"[workshop] universal checkpoint in {record['universal']} ({record['convert_s']:.1f} s); "
                  f"resume it with --resume {record['checkpoint']}", flush=True)
        else:
            record = export(args.run_dir, args.checkpoint, args.out)
            print(f"[workshop] {record['format']} checkpoint {record['checkpoint']} -> {record['out']}: "
                  f"{record['parameters']:,} parameters, {record['export_bytes'] / 2**20:.1f} MiB in "
                  f"{record['convert_s']:.1f} s; reloaded logits within {record['reloaded_logits_max_abs_diff']:.2g}",
                  flush=True)
    except WorkshopError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
