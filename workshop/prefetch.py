"""Download models and SQuAD into the Hugging Face cache on a login node (which has internet).

    python -m workshop.prefetch                         # bloom-560m + squad
    python -m workshop.prefetch --model bloom-1b7 bloom-3b
    python -m workshop.prefetch --model Qwen/Qwen2-1.5B llama   # any Hub causal LM; a family name is its member

Compute nodes often have no network: submit jobs with `HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1` and they read
what this command cached. The cache is `$HF_HOME` (default ~/.cache/huggingface): on a cluster point it at a
shared filesystem that compute nodes see, e.g. `export HF_HOME=/scratch/$USER/hf`.
"""
import argparse
import os
import sys
from pathlib import Path

from workshop.errors import WorkshopError
from workshop.model import is_tiny, resolve_model

# Weights as safetensors only (no pickled .bin), the config, and every tokenizer format the families use
# (tokenizer.json, SentencePiece's .model, BPE's vocab.json + merges.txt).
PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "merges.txt"]


def prefetch(models, dataset=True):
    from huggingface_hub import snapshot_download

    for name in models:
        model_id = resolve_model(name)
        if is_tiny(model_id):
            continue  # embedded: nothing to download
        print(f"[workshop] downloading {model_id} (safetensors, config, tokenizer) ...", flush=True)
        path = snapshot_download(model_id, allow_patterns=PATTERNS)
        if not any(Path(path).glob("*.safetensors")):
            raise WorkshopError(f"{model_id} publishes no safetensors weights (only pickled .bin files, which the "
                                "workshop does not load); pick a checkpoint that does, or train it with --init random")
        print(f"[workshop]   cached at {path}", flush=True)
    if dataset:
        from datasets import load_dataset

        print("[workshop] downloading the squad dataset ...", flush=True)
        squad = load_dataset("squad")
        print(f"[workshop]   cached: {', '.join(f'{k} {len(v)}' for k, v in squad.items())}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m workshop.prefetch", description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["bloom-560m"], help="model names (default bloom-560m)")
    parser.add_argument("--no-dataset", action="store_true", help="skip the squad dataset")
    args = parser.parse_args(argv)
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        sys.exit("error: HF_HUB_OFFLINE=1 is set: prefetch needs the network; run it on a login node without it")
    try:
        prefetch(args.model, dataset=not args.no_dataset)
    except WorkshopError as err:
        sys.exit(f"error: {err}")
    except OSError as err:
        sys.exit(f"error: download failed ({type(err).__name__}: {str(err).splitlines()[0]}); "
                 "is this a node with internet access?")
    print("[workshop] done: compute nodes can now run with HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1")


if __name__ == "__main__":
    main()
