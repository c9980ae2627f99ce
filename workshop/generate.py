"""Use the fine-tuned model: answer questions with a run's saved model, with latency and tokens/s per answer.

    python -m workshop.generate --run-dir logs/<run_id>                       the first --limit held-out examples
    python -m workshop.generate --run-dir logs/<run_id> --question Q --context C
    python -m workshop.generate --run-dir logs/<run_id> --engine deepspeed    DeepSpeed-Inference (a CUDA GPU)
    python -m workshop.generate --run-dir logs/<run_id> --engine deepspeed --no-kernel-inject

The model is <output_dir>/final from the run's manifest (or --model-dir); the prompt is the training's
`Question: … Context: … Answer:` and the answer is greedy, ending at a newline or end-of-text, one prompt at a time
so each latency is one answer's (`--fixed-length`: every answer --max-new-tokens long, to time engines on equal
work). On a GPU the model runs in fp16. `--engine deepspeed` wraps it with
`deepspeed.init_inference` (fp16, with DeepSpeed's fused kernels injected where it supports the architecture;
DeepSpeed 0.19 refuses BLOOM's under transformers after 4.43.4, which is one `error:` line; `--no-kernel-inject`
keeps the model's own modules).
"""
import argparse
import sys
import time
from pathlib import Path

import torch

from workshop.answer_quality import as_answer, eval_examples, new_tokens
from workshop.data import format_prompt
from workshop.errors import WorkshopError
from workshop.peft_model import load_run_model
from workshop.run_settings import read_settings, saved_model


def deepspeed_inference(model, kernel_inject=True):
    """The model inside a DeepSpeed-Inference engine on this GPU (fp16; DeepSpeed's fused kernels if kernel_inject)."""
    import deepspeed

    try:
        engine = deepspeed.init_inference(model, dtype=model.dtype, replace_with_kernel_inject=kernel_inject)
    except RuntimeError as err:
        if not kernel_inject:
            raise
        # DeepSpeed refuses some architectures at some transformers versions (BLOOM after 4.43.4) in these words
        raise WorkshopError(f"DeepSpeed {deepspeed.__version__} cannot inject its kernels into "
                            f"{type(model).__name__} here: {err} Use --no-kernel-inject (DeepSpeed-Inference with "
                            "the model's own modules)") from err
    return engine.module


def load(run_dir, model_dir=None, engine="plain", kernel_inject=True):
    """(model ready to generate, tokenizer, the run's settings)."""
    if engine == "deepspeed" and not torch.cuda.is_available():
        raise WorkshopError("--engine deepspeed needs a CUDA GPU (DeepSpeed-Inference runs its kernels there) and "
                            "none is visible here: use --engine plain, or run it on a GPU node (srun --gpus=1 ...)")
    settings = read_settings(Path(run_dir))
    model, tokenizer = load_run_model(settings, saved_model(settings, model_dir))
    if engine == "deepspeed" and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()  # a LoRA adapter folded in: DeepSpeed-Inference sees a plain model
    if torch.cuda.is_available():  # both engines in fp16, so that a comparison of them is one of engines alone
        model = model.to("cuda", dtype=torch.float16)
    return (deepspeed_inference(model, kernel_inject) if engine == "deepspeed" else model), tokenizer, settings


def answer(model, tokenizer, question, context, max_new_tokens=16, max_length=None, fixed_length=False):
    """{"answer", "new_tokens", "latency_s", "tokens_per_s"} for one question."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    began = time.perf_counter()
    generated = new_tokens(model, tokenizer, [format_prompt(question, context)], max_new_tokens, max_length,
                           fixed_length)[0]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    count = len(generated) if fixed_length or tokenizer.pad_token_id is None else \
        int((generated != tokenizer.pad_token_id).sum())
    return {"answer": as_answer(tokenizer.decode(generated, skip_special_tokens=True)), "new_tokens": count,
            "latency_s": seconds, "tokens_per_s": count / seconds if seconds else float("nan")}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m workshop.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, help="the training's run folder (logs/<run_id>)")
    parser.add_argument("--model-dir", help="the fine-tuned model (default: <output_dir>/final from the manifest)")
    parser.add_argument("--question", help="your question (with --context); default: the run's held-out examples")
    parser.add_argument("--context", help="the text the answer is to be found in")
    parser.add_argument("--limit", type=int, default=5, help="held-out examples to answer (default 5)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--fixed-length", action="store_true",
                        help="every answer exactly --max-new-tokens tokens, past its newline or end-of-text: equal "
                             "work for timing engines (a briefly trained model often stops at once); the answer "
                             "shown is still cut at its first newline")
    parser.add_argument("--engine", choices=("plain", "deepspeed"), default="plain",
                        help="plain: transformers' generate; deepspeed: DeepSpeed-Inference (a CUDA GPU)")
    parser.add_argument("--no-kernel-inject", dest="kernel_inject", action="store_false",
                        help="with --engine deepspeed: keep the model's own modules (no fused kernels; DeepSpeed "
                             "builds its transformer_inference op the first time kernels are injected)")
    args = parser.parse_args(argv)
    try:
        if (args.question is None) != (args.context is None):
            raise WorkshopError("--question and --context go together")
        if args.limit < 1 or args.max_new_tokens < 1:
            raise WorkshopError(f"--limit and --max-new-tokens must be at least 1 (got {args.limit}, "
                                f"{args.max_new_tokens})")
        model, tokenizer, settings = load(args.run_dir, args.model_dir, args.engine, args.kernel_inject)
        if args.question is not None:
            examples = [{"question": args.question, "context": args.context}]
        else:
            examples = eval_examples(settings)[:args.limit]
    except WorkshopError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    engine = args.engine + ("" if args.engine == "plain" else " (kernel injection)" if args.kernel_inject else
                            " (no kernel injection)")
    print(f"[generate] {engine} generate on {device}, {len(examples)} question(s)", flush=True)
    if torch.cuda.is_available():  # the first call pays for CUDA's lazy set-up (and DeepSpeed's kernels' warm-up)
        answer(model, tokenizer, examples[0]["question"], examples[0]["context"], args.max_new_tokens,
               settings["max_length"], args.fixed_length)
        print("[generate] one warm-up answer done (not counted)", flush=True)
    results = []
    for n, example in enumerate(examples, 1):
        result = answer(model, tokenizer, example["question"], example["context"], args.max_new_tokens,
                        settings["max_length"], args.fixed_length)
        results.append(result)
        reference = example.get("answers", {}).get("text", [None])[0]
        print(f"{n}. Q: {example['question']}\n   A: {result['answer']!r}"
              + (f" (reference: {reference!r})" if reference is not None else "")
              + f"\n   {result['new_tokens']} tokens in {result['latency_s'] * 1000:.0f} ms: "
                f"{result['tokens_per_s']:.1f} tokens/s", flush=True)
    total_tokens, total_s = sum(r["new_tokens"] for r in results), sum(r["latency_s"] for r in results)
    print(f"[generate] {len(results)} answers, mean latency {total_s / len(results) * 1000:.0f} ms, "
          f"{total_tokens / total_s if total_s else float('nan'):.1f} tokens/s overall", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
