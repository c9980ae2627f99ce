"""Answer quality: SQuAD exact match and F1 of a model's generated answers on a run's held-out examples.

    python -m workshop.answer_quality --run-dir logs/<run_id> [--baseline] [--model-dir DIR] [--limit N]

The eval examples are rebuilt from the run's manifest (data source, subset size, seed, eval fraction), so they
are exactly the ones the Trainer evaluated on. The model answers each `Question: … Context: … Answer:` prompt
greedily; the answer ends at end-of-text or a newline. `--baseline` also scores the starting model, rebuilt
as training built it, so the JSON holds `before` and `after`. Writes `<run-dir>/answer_quality.json`.
"""
import argparse
import sys
from pathlib import Path

from workshop.errors import WorkshopError
from workshop.run_settings import read_settings, saved_model

METRIC_DIR = Path(__file__).parent / "metrics" / "squad_em_f1"
SHOWN_EXAMPLES = 5


def load_metric():
    import evaluate

    # A local folder: evaluate imports our module from it and never asks the Hub.
    return evaluate.load(str(METRIC_DIR))


def new_tokens(model, tokenizer, prompts, max_new_tokens=16, max_length=None, fixed_length=False):
    """Greedy generation for a batch of prompts: the tensor of each prompt's new tokens (padding after the end).

    fixed_length: exactly max_new_tokens each, past any newline or end-of-text (to time engines on equal work)."""
    import torch

    device = next(model.parameters()).device
    model.eval()
    # Left padding and left truncation keep every prompt's last token "Answer:" right before the new tokens.
    sides = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side = tokenizer.truncation_side = "left"
    try:
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, truncation=max_length is not None,
                           max_length=max_length).to(device)
        with torch.no_grad():
            stop = ({"min_new_tokens": max_new_tokens} if fixed_length else
                    {"stop_strings": ["\n"], "tokenizer": tokenizer})
            output = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens,
                                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **stop)
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = sides
    return output[:, inputs["input_ids"].shape[1]:]


def as_answer(text):
    """The answer ends at the first newline (the prompt format's end of an answer)."""
    return text.split("\n")[0].strip()


def generate_answers(model, tokenizer, examples, max_new_tokens=16, batch_size=8, max_length=None):
    """Greedy answers (stripped strings) to each example's prompt, in order."""
    from workshop.data import format_prompt

    answers = []
    for start in range(0, len(examples), batch_size):
        prompts = [format_prompt(e["question"], e["context"]) for e in examples[start:start + batch_size]]
        generated = new_tokens(model, tokenizer, prompts, max_new_tokens, max_length)
        answers += [as_answer(text) for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]
    return answers


def score(model, tokenizer, examples, max_new_tokens=16, max_length=None, metric=None):
    """{"exact_match", "f1" (both %), "n", "examples": the first few question/prediction/reference}."""
    if not examples:
        raise WorkshopError("no examples to score")
    predictions = generate_answers(model, tokenizer, examples, max_new_tokens, max_length=max_length)
    references = [e["answers"]["text"] for e in examples]
    result = (metric or load_metric()).compute(predictions=predictions, references=references)
    shown = [{"question": e["question"], "prediction": p, "reference": r[0]}
             for e, p, r in zip(examples, predictions, references)][:SHOWN_EXAMPLES]
    return {"exact_match": round(result["exact_match"], 2), "f1": round(result["f1"], 2), "n": len(examples),
            "examples": shown}


def eval_examples(settings: dict) -> list[dict]:
    """The held-out examples of the run, rebuilt exactly as workshop.train split them."""
    from workshop.data import load_squad, split

    subset = load_squad(settings["subset_size"], source=settings["data"])
    return split(subset, settings["eval_fraction"], settings["seed"])[1]


def evaluate_run(run_dir, model_dir=None, limit=None, baseline=False, max_new_tokens=16) -> dict:
    run_dir = Path(run_dir)
    settings = read_settings(run_dir)
    model_dir = saved_model(settings, model_dir)
    import torch  # after the checks above: a wrong run folder is an error line within a second

    from workshop.model import load_model
    from workshop.peft_model import load_run_model
    from workshop.runlog import utc_now, write_json

    examples = eval_examples(settings)[:limit]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    metric = load_metric()
    report = {"run_dir": str(run_dir), "model_dir": str(model_dir), "n": len(examples),
              "max_new_tokens": max_new_tokens, "time": utc_now()}
    if baseline:
        # load_model seeds before building, so the tiny model's random start is the one training began from.
        model, tokenizer = load_model(settings["model"], init=settings["init"], seed=settings["seed"])
        report["before"] = score(model.to(device), tokenizer, examples, max_new_tokens, settings["max_length"],
                                 metric)
        del model
    model, tokenizer = load_run_model(settings, model_dir)
    report["after"] = score(model.to(device), tokenizer, examples, max_new_tokens, settings["max_length"], metric)
    write_json(run_dir / "answer_quality.json", report)
    return report


def score_at_end(run_dir, model_dir, limit=None):
    """--score-answers: the EM/F1 of the model a training just saved, into <run_dir>/answer_quality.json. A failure
    here is a notice, not the run's: the training completed, and its table cell then says `n/a (not scored)`."""
    print(f"[workshop] scoring the fine-tuned model's answers ({f'first {limit}' if limit else 'all'} held-out "
          "examples; --no-score-answers skips this)", flush=True)
    try:
        report = evaluate_run(run_dir, model_dir, limit)
    except Exception as err:  # noqa: BLE001  (an OOM or a metric error must not turn a trained run into a failed one)
        print(f"[workshop] notice: scoring the answers failed ({type(err).__name__}: {err}); score them later with "
              f"`python -m workshop.answer_quality --run-dir {run_dir}`", flush=True)
        return None
    print(f"[workshop] {summary(report)}", flush=True)
    return report


def summary(report: dict) -> str:
    after = report["after"]
    line = f"answer quality on {report['n']} held-out examples: EM {after['exact_match']:.1f}, F1 {after['f1']:.1f}"
    if "before" in report:
        before = report["before"]
        line += f" (before fine-tuning: EM {before['exact_match']:.1f}, F1 {before['f1']:.1f})"
    return line + f"; {report['run_dir']}/answer_quality.json"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m workshop.answer_quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, help="the training's run folder (logs/<run_id>)")
    parser.add_argument("--model-dir", help="the fine-tuned model (default: <output_dir>/final from the manifest)")
    parser.add_argument("--limit", type=int, help="score only the first N held-out examples")
    parser.add_argument("--baseline", action="store_true", help="also score the model training started from")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    try:
        if args.limit is not None and args.limit < 1:
            raise WorkshopError(f"--limit must be at least 1 (got {args.limit})")
        report = evaluate_run(args.run_dir, args.model_dir, args.limit, args.baseline, args.max_new_tokens)
    except WorkshopError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
