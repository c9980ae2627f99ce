"""python -m workshop.merge --run-dir logs/<run>: a LoRA (or QLoRA) run's adapter folded into its base model and
saved as a plain Hugging Face model, which anything that reads one loads without peft (workshop.generate, vLLM, ...).

The base is rebuilt as the training built it (the manifest's model, init and seed; a QLoRA adapter goes onto the
base in full precision, not its 4-bit copy), the adapter is put on it and merged (W + B A x alpha/r, peft's
merge_and_unload). The merged model is <output_dir>/merged unless --out names a folder.
"""
import argparse
import sys
from pathlib import Path

from workshop.entry import fail
from workshop.errors import WorkshopError
from workshop.run_settings import read_settings, saved_model


def merge(run_dir, model_dir=None, out=None) -> Path:
    settings = read_settings(Path(run_dir))
    folder = saved_model(settings, model_dir)  # before torch loads: a wrong folder is an error line at once
    from workshop.model import save_model
    from workshop.peft_model import is_adapter, load_run_model

    if not is_adapter(folder):
        raise WorkshopError(f"{folder} holds a whole model already (a full fine-tune, or merged): nothing to merge")
    model, tokenizer = load_run_model(settings, folder)
    merged = model.merge_and_unload()
    out = Path(out or folder.parent / "merged")
    save_model(merged, tokenizer, out)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m workshop.merge", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="the LoRA run's folder (logs/<run>)")
    parser.add_argument("--model-dir", help="the adapter (default: <output_dir>/final from the manifest)")
    parser.add_argument("--out", help="where the merged model goes (default: <output_dir>/merged)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        out = merge(args.run_dir, args.model_dir, args.out)
    except WorkshopError as err:
        fail(err)
    print(f"[workshop] merged model in {out}", flush=True)


if __name__ == "__main__":
    main()
