#!/usr/bin/env bash
# The lesson-2 sweeps on one GPU, through the lesson's own scripts run with plain bash, as a student would:
# random weights, embedded data, checkpoint saving off (DeepSpeed checkpoints of 3b-7b1 would fill the disk and
# writing them is not what the lesson's tables compare).
#
#   bash tools/gpu_sweep.sh start PLAN...  start the PLANs, one after the other, in the background (they survive
#                                          this shell) and return at once
#   bash tools/gpu_sweep.sh wait SECONDS   wait for it (up to SECONDS), then pack logs/ into $OUT
#
# PLAN: `lesson` (bloom-560m, the whole lesson, every config), `sizes` (bloom-1b7, 3b, 7b1 as the workshop text
# asks, 10 optimizer steps each), `small` (bloom-560m, every config, 20 steps), `extra` (NVMe offload, 7b1 at
# micro-batch 1), `inference` (plain generate vs DeepSpeed-Inference without, then `inject` with its kernels),
# `lora` (issue 25: full, LoRA and QLoRA at 560m and 1b7, 7b1 QLoRA in 40 GB), `lora_b` (its ZeRO-3 and 7b1 rest), `fsdp` and `fsdp_b` (issue 26's one-GPU rows), `precision`, `precision_rest`, `checkpointing` or `max_batch` (lesson 5's tables:
# workshop/lessons/precision_and_checkpointing.py),
# `offload` (issue 28: bloom-1b7 resident vs offload vs ZenFlow, then lesson 2's owed bloom-560m rows),
# `families` (a non-BLOOM architecture at ~1B: TinyLlama
# 1.1B's shape, LLaMA with GQA and untied embeddings, built from workshop/shapes.py, through the baseline and
# ZeRO-2, 20 steps each), `flexprof` (issue 28: a profile of sdpa and of flex attention), `offload_mb`, `offload_gc` and `flexfix` (issue 28: offload's micro-batch, flex attention's core and tiles), `mfu28` and `mfu28b` (issue 28: offload's micro-batch with the chunked loss, micro-batch 64 in the ladder), `fast28` (issue 28: FlexAttention beside the loop, start-up, ZenFlow at 560m) or `fast` (issue 13: the make-it-fast ladder with the reference loop and sdpa attention,
# the start-up breakdown of both launch paths, the logger overhead with its spread, and the GPU check of
# --attention sdpa against the stock module; results under logs/bench/). A `bench` line is `python3
# benchmarks/bench.py ARGS`, a `pytest` line `python3 -m pytest ARGS`, others a slurm script. Each run has a time
# limit (RUN_LIMIT seconds, default 300), so one stuck run cannot eat the sweep. Written for the device tool's
# machines (no network: HF_HUB_OFFLINE=1, carried wheels in /tmp/site).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
LESSON="--model 560m --init random --data embedded --save-strategy no"
P5="--init random --data embedded --save-strategy no --no-save-final --logging-steps 2"
SHORT="--init random --data embedded --save-strategy no --no-save-final --eval-strategy no --logging-steps 2"

# One run a line: SCRIPT then its arguments.
plan() {
    case $1 in
    lesson)
        for c in baseline stage0 stage1 stage2 stage1_offload stage2_offload stage3 stage2_offload_nopin \
            stage3_offload stage3_offload_nopin; do echo "$c $LESSON"; done ;;
    sizes)
        echo "stage2 --model 7b1 --subset 10000 --max-steps 10 --gpu-memory-limit 80 $SHORT"
        echo "stage3_offload --model 7b1 --subset 10000 --max-steps 10 $SHORT"
        echo "stage3 --model 7b1 --subset 10000 --max-steps 10 $SHORT"
        for m in 3b 1b7; do
            for c in stage2_offload stage3_offload; do echo "$c --model $m --subset 10000 --max-steps 10 $SHORT"; done
        done ;;
    rest)  # what a cut-short `sizes` did not reach
        echo "stage3_offload --model 3b --subset 10000 --max-steps 10 $SHORT"
        for c in stage2_offload stage3_offload; do echo "$c --model 1b7 --subset 10000 --max-steps 10 $SHORT"; done ;;
    last)  # the 560m configs and the NVMe run the first calls did not reach
        for c in stage1 stage2 stage3 stage2_offload stage3_offload; do
            echo "$c --model 560m --subset 10000 --max-steps 20 $SHORT"; done
        echo "stage3_offload_nvme --model 560m --subset 10000 --max-steps 4 --nvme-path /tmp/nvme $SHORT"
        for c in stage1_offload stage2_offload_nopin; do echo "$c --model 560m --subset 10000 --max-steps 20 $SHORT"; done ;;
    offload)  # issue 28: bloom-1b7 GPU-resident vs classic offload vs ZenFlow (offloaded throughput >= 50% of
        # resident is the goal), then the bloom-560m rows lesson 2 still owed (`last` did not reach them). OPS= with
        # the ops built here, two builders at once (nothing is timed yet); async_io needs libaio (CPATH etc.)
        echo "prebuild_background cpu_adam async_io"
        echo "prebuild fused_adam"
        echo "wait_background"
        for c in stage2 stage2_offload stage2_zenflow stage3_offload; do
            echo "$c --model 1b7 --subset 10000 --max-steps 20 $SHORT"; done
        for c in stage1_offload stage3_offload stage2_offload_nopin stage3_offload_nopin; do
            echo "$c --model 560m --subset 10000 --max-steps 20 $SHORT"; done
        echo "stage3_offload_nvme --model 560m --subset 10000 --max-steps 4 --nvme-path /tmp/nvme $SHORT"
        # the same three at 560m on this card, beside the committed H200 rows
        for c in stage2 stage2_offload stage2_zenflow; do echo "$c --model 560m --subset 10000 --max-steps 20 $SHORT"; done ;;
    small)
        for c in baseline stage0 stage1 stage1_offload stage2 stage2_offload stage2_offload_nopin stage3 \
            stage3_offload; do echo "$c --model 560m --subset 10000 --max-steps 20 $SHORT"; done ;;
    families)  # random init needs no download: the shape is in workshop/shapes.py, the tokenizer the embedded one
        for c in baseline stage2; do echo "$c --model llama --subset 10000 --max-steps 20 $SHORT"; done ;;
    inference)  # issue 14: plain generate vs DeepSpeed-Inference on a fine-tuned bloom-560m (random init: the machine
        # reaches no Hub, and tokens/s and latency do not depend on the weights' values); scored at the end (EM/F1).
        # The final model goes outside outputs/ (which each line's clean-up removes): generate reads it.
        echo "baseline --model 560m --subset 2000 --max-steps 40 --score-answers --score-limit 50 --init random" \
            "--data embedded --save-strategy no --logging-steps 2 --output-dir /tmp/inference_model"
        for engine in plain "deepspeed --no-kernel-inject"; do echo "generate --engine $engine --limit 20 --max-new-tokens 32"; done ;;
    inject)  # after `inference`: DeepSpeed-Inference with its fused kernels (a JIT build of their own, made first;
        # a load when `max_batch` built it in the background already)
        echo "prebuild transformer_inference"
        echo "generate --engine deepspeed --limit 20 --max-new-tokens 32" ;;
    extra)
        echo "stage3_offload_nvme --model 3b --subset 10000 --max-steps 5 --nvme-path /tmp/nvme $SHORT"
        echo "stage3 --model 7b1 --subset 10000 --max-steps 10 --per-device-train-batch-size 1 --gradient-accumulation-steps 16 $SHORT" ;;
    fast)  # issue 13, what 2026-12-03's first call did not reach; the second call ran all of it in 25 min
        # (docs/results/make_it_fast_h200-2026-12-03-b): one held machine, start, then `wait` in three calls;
        # RUN_LIMIT=1200 for the ladder; OPS= so that DeepSpeed's ops build in the background behind the untimed
        # attention check and profile. The ladder's rows that answer the reference loop, with it, in one invocation;
        # a profile of steady steps; start-up of the rest of both launch paths; the logger overhead (GPU-bound pair
        # first). Results under logs/bench/
        echo "prebuild_background fused_adam cpu_adam"
        echo "pytest tests/test_attention.py -m gpu -q -s -p no:cacheprovider"
        echo "fast --model 560m --init random --data embedded --subset 2000 --max-steps 12 --save-strategy no" \
            "--no-save-final --no-score-answers --eval-strategy no --attention sdpa --fewer-syncs --chunked-loss" \
            "--per-device-train-batch-size 32 --torch-profiler"
        echo "importtime"  # where the 13-18 s of imports before every run's first step go on this machine
        echo "wait_background"
        echo "bench benchmarks/make_it_fast.toml --out logs/bench/make_it_fast_h200 --work logs/bench-runs --only" \
            "'fused AdamW,reference loop (eager),torch.compile,reference loop (compiled),fewer host syncs," \
            "chunked loss,micro-batch 32'"
        echo "bench benchmarks/deepspeed_startup.toml --out logs/bench/deepspeed_startup_h200 --work logs/bench-runs" \
            "--only 'stage3 (python),stage1_offload (python),stage2_offload (python),stage2_offload_nopin (python)," \
            "stage3_offload (python),stage3_offload_nopin (python),stage1,stage3,stage1_offload,stage2_offload'"
        echo "bench benchmarks/logger_overhead.toml --repeats 4 --out logs/bench/logger_overhead_packed_h200" \
            "--work logs/bench-runs --only 'packed (no loggers),packed + loggers (slurm/fast.slurm)'"
        echo "bench benchmarks/logger_overhead.toml --repeats 2 --out logs/bench/logger_overhead_seed_h200" \
            "--work logs/bench-runs --only 'no loggers,loggers (slurm/baseline.slurm)'" ;;
    fast28)  # issue 28 on one GPU: the GPU attention check (sdpa and flex, left-padded batch), the imports, then
        # FlexAttention at the ladder's best flags beside the plain loop with the same flags (2 alternating repeats),
        # the sdpa row it replaces, start-up to the first step of every lesson-2 config with --launcher python (ops
        # built meanwhile, behind the untimed check), and ZenFlow at bloom-560m in bf16 beside classic offload.
        # RUN_LIMIT=900 (the flex pair is 4 compiled runs in one line). Results under logs/bench/. Run on 2026-12-06
        # (docs/results/make_it_fast_h100-2026-12-06): a helper's checkout travels as a carried folder; a later call
        # that did not carry it found it deleted, the running sweep's logs with it, and carrying it replaces it.
        # From such a folder, run the plan inside one call, or write logs/ outside the carried folder.
        echo "prebuild_background fused_adam cpu_adam"
        echo "importtime"
        echo "pytest tests/test_attention.py -m gpu -q -s -p no:cacheprovider"
        echo "wait_background"
        echo "bench benchmarks/make_it_fast.toml --repeats 2 --steps 60 --out logs/bench/make_it_fast_flex" \
            "--work logs/bench-runs --only 'flex attention,reference loop (flex attention)'"
        echo "bench benchmarks/make_it_fast.toml --steps 60 --out logs/bench/make_it_fast_sdpa --work logs/bench-runs" \
            "--only 'micro-batch 32'"
        echo "bench benchmarks/deepspeed_startup.toml --out logs/bench/deepspeed_startup_python --work logs/bench-runs" \
            "--only 'stage0 (python),stage1 (python),stage2 (python),stage3 (python),stage1_offload (python)," \
            "stage2_offload (python),stage2_offload_nopin (python),stage3_offload (python),stage3_offload_nopin (python)'"
        for c in stage2_zenflow stage2_offload stage2; do
            echo "$c --model 560m --precision bf16 --subset 10000 --max-steps 20 $SHORT"; done ;;
    flexprof)  # issue 28: where flex attention's 16% behind sdpa goes (0.84x on the H100, 2026-12-06): 3 steady steps
        # of each profiled at the ladder's best flags (profile_top.txt in each run folder)
        for a in sdpa flex; do
            echo "fast --model 560m --init random --data embedded --subset 2000 --max-steps 12 --save-strategy no" \
                "--no-save-final --no-score-answers --eval-strategy no --attention $a --fewer-syncs --chunked-loss" \
                "--per-device-train-batch-size 32 --torch-profiler"
        done ;;
    offload_mb)  # issue 28: ZeRO-2 offload copies every micro-batch's gradients to the host, so accumulation repeats
        # that cost (gas 16 made offload slower relative to stage2, 2026-12-05) while a larger micro-batch spreads it,
        # and CPU Adam's step, over more tokens; offload's freed GPU memory is what pays for it. bloom-1b7, bf16
        echo "stage2 --model 1b7 --precision bf16 --subset 10000 --max-steps 20 $SHORT"  # micro-batch 4 x gas 4
        for mb in 16 32; do
            echo "stage2_offload --model 1b7 --precision bf16 --per-device-train-batch-size $mb" \
                "--gradient-accumulation-steps 1 --subset 10000 --max-steps 20 $SHORT"; done
        echo "stage2 --model 1b7 --precision bf16 --per-device-train-batch-size 16 --gradient-accumulation-steps 1" \
            "--subset 10000 --max-steps 20 $SHORT" ;;
    offload_gc)  # issue 28, after offload_mb (micro-batch 32 ran out of GPU memory): gradient checkpointing buys
        # the larger micro-batch, for offload and for the resident config alike; then flex attention's core alone
        echo "bench_flex"
        echo "stage2_offload --model 1b7 --precision bf16 --per-device-train-batch-size 64 --gradient-accumulation-steps 1" \
            "--gradient-checkpointing --subset 10000 --max-steps 16 $SHORT"
        echo "stage2 --model 1b7 --precision bf16 --per-device-train-batch-size 32 --gradient-accumulation-steps 1" \
            "--gradient-checkpointing --subset 10000 --max-steps 16 $SHORT" ;;
    flexfix)  # issue 28, after flex_variants: flex attention with its measured tiles beside sdpa in the ladder's best
        # row (same call, same machine), the GPU attention check again, then offload's micro-batch with checkpointing
        # and the chunked loss (the 250,880-way logits, not the layers, are what ran out of memory in offload_gc)
        echo "pytest tests/test_attention.py -m gpu -q -s -p no:cacheprovider"
        for a in sdpa flex; do
            echo "fast --model 560m --init random --data embedded --subset 2000 --max-steps 30 --save-strategy no" \
                "--no-save-final --no-score-answers --eval-strategy no --attention $a --fewer-syncs --chunked-loss" \
                "--per-device-train-batch-size 32"
        done
        for mb in 32 64; do
            echo "stage2_offload --model 1b7 --precision bf16 --per-device-train-batch-size $mb" \
                "--gradient-accumulation-steps 1 --gradient-checkpointing --chunked-loss --subset 10000 --max-steps 12 $SHORT"
        done ;;
    mfu28)  # issue 28, after flexfix (its offload lines were not reached): offload's micro-batch with checkpointing
        # and the chunked loss beside the resident config with the same loss, then flex attention at micro-batch 64
        for mb in 32 64; do
            echo "stage2_offload --model 1b7 --precision bf16 --per-device-train-batch-size $mb" \
                "--gradient-accumulation-steps 1 --gradient-checkpointing --chunked-loss --subset 10000 --max-steps 12 $SHORT"
        done
        echo "stage2 --model 1b7 --precision bf16 --per-device-train-batch-size 16 --gradient-accumulation-steps 1" \
            "--chunked-loss --subset 10000 --max-steps 12 $SHORT"
        for mb in 64 32; do
            echo "fast --model 560m --init random --data embedded --subset 4000 --max-steps 30 --save-strategy no" \
                "--no-save-final --no-score-answers --eval-strategy no --attention flex --fewer-syncs --chunked-loss" \
                "--per-device-train-batch-size $mb"
        done ;;
    mfu28b)  # issue 28, after mfu28 (whose last run its call did not finish): on one machine, the resident config's
        # fastest setting (16 x 1 without the chunked loss), then flex at micro-batch 32 and sdpa at 64 beside mfu28's flex at 64
        echo "stage2 --model 1b7 --precision bf16 --per-device-train-batch-size 16 --gradient-accumulation-steps 1" \
            "--subset 10000 --max-steps 12 $SHORT"
        for a in "flex --per-device-train-batch-size 32" "sdpa --per-device-train-batch-size 64"; do
            echo "fast --model 560m --init random --data embedded --subset 4000 --max-steps 30 --save-strategy no" \
                "--no-save-final --no-score-answers --eval-strategy no --fewer-syncs --chunked-loss --attention $a"
        done ;;
    lora)  # issue 25 (lesson 6) on one GPU: full fine-tuning, LoRA and QLoRA of bloom-560m and 1b7 under the plain
        # Trainer in bf16, 20 steps each; bloom-7b1's QLoRA within the class's 40 GB (--gpu-memory-limit 40); then
        # LoRA under ZeRO 3 (what one call does not reach is left for the next). Full fine-tuning at the baseline's
        # learning rate, LoRA at the lesson's.
        for m in 560m 1b7; do
            echo "lora none --peft none --learning-rate 5e-5 --model $m --bf16 --subset 10000 --max-steps 20 $SHORT"
            echo "lora none --model $m --bf16 --subset 10000 --max-steps 20 $SHORT"
            echo "qlora none --model $m --subset 10000 --max-steps 20 $SHORT"
        done
        echo "qlora none --model 7b1 --gpu-memory-limit 40 --subset 2000 --max-steps 10 $SHORT"
        for m in 560m 1b7; do echo "lora stage3 --model $m --bf16 --subset 10000 --max-steps 20 $SHORT"; done ;;
    lora_b)  # issue 25, after lora: full fine-tuning under ZeRO 3 beside lora's LoRA rows there, LoRA of 560m again
        # (its first interval was wide), and bloom-7b1's LoRA and full fine-tuning against the class's 40 GB (the
        # preflight's estimate says neither fits: this shows whether it stops them before they load)
        for m in 560m 1b7; do
            echo "lora stage3 --peft none --learning-rate 5e-5 --model $m --bf16 --subset 10000 --max-steps 20 $SHORT"
        done
        echo "lora none --model 560m --bf16 --subset 10000 --max-steps 20 $SHORT"
        echo "lora none --model 7b1 --bf16 --gpu-memory-limit 40 --subset 2000 --max-steps 10 $SHORT"
        echo "lora none --peft none --learning-rate 5e-5 --model 7b1 --bf16 --gpu-memory-limit 40 --subset 2000 --max-steps 10 $SHORT" ;;
    fsdp)  # issue 26 (lesson 7) on one GPU: ZeRO 3 + CPU offload beside FSDP2 FULL_SHARD + CPU offload, bloom-1b7
        # and 3b, bf16, 12 steps each; then the resident pair (ZeRO 3, FULL_SHARD) for 1b7
        for m in 1b7 3b; do
            for mode in stage3_offload full_shard_offload; do
                echo "fsdp $mode --model $m --bf16 --subset 10000 --max-steps 12 $SHORT"
            done
        done
        for mode in stage3 full_shard; do echo "fsdp $mode --model 1b7 --bf16 --subset 10000 --max-steps 12 $SHORT"; done ;;
    fsdp_b)  # issue 26, after fsdp: FULL_SHARD + CPU offload again, with the Trainer no longer moving the model
        for m in 1b7 3b; do echo "fsdp full_shard_offload --model $m --bf16 --subset 10000 --max-steps 12 $SHORT"; done ;;
    precision)  # lesson 5: bloom-560m, the plain Trainer and ZeRO 0-3, each in fp32, fp16 and bf16 (eval at the end)
        for s in none stage0 stage1 stage2 stage3; do
            for p in fp32 fp16 bf16; do echo "precision $s $p --model 560m --subset 10000 --max-steps 40 $P5"; done
        done ;;
    precision_rest)  # what 2026-12-02's call did not reach (ZeRO 3 in half precision), and ZeRO 0 in fp16 and bf16
        # again with stage0.json's loss-scale fix
        for sp in "stage3 fp16" "stage3 bf16" "stage0 fp16" "stage0 bf16"; do
            echo "precision $sp --model 560m --subset 10000 --max-steps 40 $P5"; done ;;
    checkpointing)  # lesson 5: bloom-560m and 1b7 with checkpointing off and on (timed)
        for m in 560m 1b7; do
            for c in off on; do echo "checkpointing $c none bf16 --model $m --subset 10000 --max-steps 40 $P5"; done
        done ;;
    max_batch)  # lesson 5: the largest micro-batch of 560m and 1b7 with and without checkpointing under the class's
        # 80 GiB (each search is one line of several trials: RUN_LIMIT=900). Nothing here is timed, so the kernels
        # of `inject` are compiled meanwhile, in the background, on a few of the CPU cores
        echo "prebuild_background transformer_inference"
        for m in 560m 1b7; do
            for c in --no-gradient-checkpointing --gradient-checkpointing; do
                echo "max_batch --start 8 --max 128 --steps 2 --model $m --precision bf16 --gpu-memory-limit 80 $c $P5"
            done
        done ;;
    *) echo "unknown plan $1" >&2; return 2 ;;
    esac
}

case ${1:-} in
start)
    shift
    plans="${*:?plan}"
    for p in $plans; do plan "$p" > /dev/null; done
    mkdir -p logs
    {
        echo "date: $(date -u +%FT%TZ)"
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
        python3 -c 'import torch, transformers, deepspeed; print("torch", torch.__version__, "transformers", transformers.__version__, "deepspeed", deepspeed.__version__)'
        grep -E 'MemTotal|MemAvailable' /proc/meminfo
        echo "cgroup memory.max: $(cat /sys/fs/cgroup/memory.max 2>/dev/null || echo none)"
        df -h /tmp | tail -1
        echo "WORKSHOP_HOST_MEMORY_GIB: ${WORKSHOP_HOST_MEMORY_GIB:-unset}"
        for p in $plans; do echo "plan $p:"; plan "$p"; done
    } >> logs/sweep_info.txt 2>&1
    # Build DeepSpeed's ops once, before any timed run (a carried build folder makes this a load); OPS: which.
    rm -f logs/sweep_done
    ops=${OPS-fused_adam cpu_adam async_io}  # OPS= (empty): none built here, the plan builds its own
    setsid bash -c "
        [ -z \"$ops\" ] || python3 -m workshop.prebuild_ops --ops $ops >> logs/prebuild_ops.log 2>&1
        for p in $plans; do bash tools/gpu_sweep.sh _runs \$p; done
        touch logs/sweep_done" >> logs/sweep.log 2>&1 < /dev/null &
    echo "sweep started: $plans"
    ;;
_runs)
    plan "$2" | while read -r script args; do
        echo "$(date -u +%T) $script $args"
        # shellcheck disable=SC2086
        case $script in
        # a bench line quotes its variant names (they hold spaces): the plan's own text, so eval is safe here
        bench) eval "timeout ${RUN_LIMIT:-300} python3 benchmarks/bench.py $args" < /dev/null || echo "  exit $?" ;;
        pytest) timeout "${RUN_LIMIT:-300}" python3 -m pytest $args < /dev/null || echo "  exit $?" ;;
        prebuild_background) MAX_JOBS=6 setsid -w python3 -m workshop.prebuild_ops --ops $args < /dev/null \
            >> logs/prebuild_ops_background.log 2>&1 &
            echo $! > logs/prebuild_background.pid ;;
        bench_flex) timeout "${RUN_LIMIT:-300}" python3 benchmarks/flex_variants.py --json logs/flex_variants.json \
            < /dev/null > logs/flex_variants.md 2>&1 || echo "  exit $?" ;;
        importtime) python3 -X importtime -c "import workshop.train" 2> logs/importtime.txt || echo "  exit $?" ;;
        wait_background) while kill -0 "$(cat logs/prebuild_background.pid)" 2> /dev/null; do sleep 2; done ;;
        prebuild) timeout "${RUN_LIMIT:-300}" python3 -m workshop.prebuild_ops --ops $args < /dev/null \
            >> logs/prebuild_ops.log 2>&1 || echo "  exit $?" ;;
        # a generate line answers with the latest baseline run's saved model
        generate) timeout "${RUN_LIMIT:-300}" python3 -m workshop.generate --run-dir "$(ls -dt logs/baseline-*/ | head -1)" \
            $args < /dev/null > "logs/generate-${args// /_}.txt" 2>&1 || echo "  exit $?" ;;
        *) timeout "${RUN_LIMIT:-300}" bash "slurm/$script.slurm" $args < /dev/null || echo "  exit $?" ;;
        esac
        rm -rf outputs /tmp/nvme
    done
    ;;
wait)
    deadline=$((SECONDS + ${2:-540}))
    while [ ! -e logs/sweep_done ] && [ $SECONDS -lt $deadline ]; do sleep 5; done
    [ -e logs/sweep_done ] && echo "sweep done" || echo "sweep still running"
    cat logs/sweep.log
    tar czf "$OUT/logs.tgz" --exclude='*.tmp' logs
    # DeepSpeed's built ops, for the next call to carry (TORCH_EXTENSIONS_DIR): a load instead of a build
    [ -z "${TORCH_EXTENSIONS_DIR:-}" ] || tar czf "$OUT/ext.tgz" -C "$TORCH_EXTENSIONS_DIR" .
    ;;
*)
    echo "usage: $0 start PLAN | wait SECONDS" >&2; exit 2 ;;
esac
