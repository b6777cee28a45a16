#!/usr/bin/env bash
# SCOPE on Qwen2.5-Math-7B, one node of 8 GPUs (the paper's setup, appendix B.1), in the style of
# verl's examples/grpo_trainer/*.sh. Copy it, set the variables below, run it:
#
#   bash examples/scope_qwen2.5_math_7b_8gpu.sh                   # train
#   bash examples/scope_qwen2.5_math_7b_8gpu.sh --print-config    # the composed config, nothing started
#   bash examples/scope_qwen2.5_math_7b_8gpu.sh trainer.save_freq=20   # key=value overrides win
#   GPUS_PER_NODE=7 bash examples/scope_qwen2.5_math_7b_8gpu.sh layout.node_gpus=8 ... --print-config
# (flags of `scope-bench train` are the variables below; key=value overrides come before --print-config)
#
# Layout: verl takes all 8 GPUs of this node (actor, rollouts, reference share them). The PRM is
# served elsewhere: on another machine (below), never on a training GPU (a vLLM PRM next to the
# rollouts runs out of memory; `scope-bench train` refuses that layout before Ray starts and lists
# the ones that work, e.g. the PRM on GPU 7 with 7 training GPUs and batch sizes that split over 7).
#
# Before the first run:
#   pip install -e '.[gpu]' && pip install flash-attn==2.8.3 --no-build-isolation     # every node
#   scope-bench data prepare --preset math-l3to5 --out data/math_l3to5                 # training set
#   scope-bench data prepare --preset math500 --out data/math500                       # validation
#   # on the PRM machine (one GPU is enough for the 7B PRM):
#   vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner pooling --port 8000 --max-model-len 4096
#   # the refiner: DeepSeek-R1 behind DeepSeek's API (or any OpenAI-compatible server)
#   export DEEPSEEK_API_KEY=...
set -euo pipefail
set -x

MODEL=${MODEL:-Qwen/Qwen2.5-Math-7B}
TRAIN=${TRAIN:-data/math_l3to5/train.parquet}
VAL=${VAL:-data/math500/test.parquet}
PRM_URL=${PRM_URL:-http://prm-host:8000}              # the vLLM pooling server above
PRM_MODEL=${PRM_MODEL:-Qwen/Qwen2.5-Math-PRM-7B}
REFINER_URL=${REFINER_URL:-https://api.deepseek.com/v1}
REFINER_MODEL=${REFINER_MODEL:-deepseek-reasoner}
REFINER_KEY_ENV=${REFINER_KEY_ENV:-DEEPSEEK_API_KEY}   # the variable's name; its value is never logged
NNODES=${NNODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
SEED=${SEED:-0}
RUN_DIR=${RUN_DIR:-runs/train/scope-qwen2.5-math-7b-seed${SEED}}

# batch 128 prompts x 8 rollouts, mini-batch 64, lr 1e-6, prompt and response 2048, 10 epochs:
# the defaults of scope_bench/engines/verl/config/scope_trainer.yaml, written out here to be seen
scope-bench train --backend verl --method scope \
    --model "$MODEL" --data "$TRAIN" --val-data "$VAL" \
    --prm-url "$PRM_URL" --prm "$PRM_MODEL" \
    --refiner-url "$REFINER_URL" --refiner "$REFINER_MODEL" --refiner-key-env "$REFINER_KEY_ENV" \
    --nnodes "$NNODES" --gpus-per-node "$GPUS_PER_NODE" --seed "$SEED" --run-dir "$RUN_DIR" \
    --logger console,wandb \
    data.train_batch_size=128 \
    data.max_prompt_length=2048 \
    data.max_response_length=2048 \
    actor_rollout_ref.rollout.n=8 \
    actor_rollout_ref.rollout.temperature=1.0 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=64 \
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=16384 \
    actor_rollout_ref.model.use_remove_padding=true \
    trainer.total_epochs=10 \
    trainer.save_freq=50 \
    trainer.max_actor_ckpt_to_keep=2 \
    "$@"

# then evaluate the last checkpoint (merged once into global_step_N/merged_hf):
#   scope-bench eval --ckpt "$RUN_DIR" --tasks all --backend vllm --dp 8
