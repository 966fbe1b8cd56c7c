# bash scripts/lease/train_regional.sh [DIR] [VARIANTS] [STEPS]: training variants of benchmarks/bench_throughput.py side by side on the
# Qwen2.5-0.5B shape (random weights, 300 steps of 4 examples, the GPU study's tuned params), issue 10's training goal:
#   before (checkpointing on, no liger), after (checkpointing off, liger: 1.55-1.68x before on an H200),
#   regional (train.torch_compile: regional), regional_liger (regional + liger; it failed in dynamo on the H100 of the
#   seventh lease and is no longer a default variant of bench_throughput.py, so it is skipped now), regional_padded and
#   regional_graphs (padded batches in multiples of 64 tokens; regional_graphs records CUDA graphs of the blocks).
#   VARIANTS: a comma-separated list (default before,after,regional); STEPS (third argument): steps per variant (300).
# Two calls. First (carry .gpu/t1: the bitsandbytes, trl, datasets, dill, multiprocess, liger-kernel wheels):
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/t1/whl/*.whl
# Second (carry DIR, default .gpu/n2: data.tgz = formatted/{train,eval_zeroshot}.jsonl + prepared/, assets.tgz =
# assets/ with the Qwen config and tokenizer): runs tests/test_cuda.py (about 75 s), then starts the benchmark
# detached and returns; poll with `bash scripts/lease/poll.sh 50` (never leave the machine idle 30 s) until
# /tmp/out/DONE, then copy /tmp/out to $OUT.
set -e
D=${1:-.gpu/n2}
V=${2:-before,after,regional}
N=${3:-300}
. scripts/lease/enter_proj.sh "$D"   # the project in /tmp/proj, its data and assets; cd there
# the CUDA tests, unless an earlier call of this lease ran them
[ -f /tmp/out/test_cuda.log ] || timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py > /tmp/out/test_cuda.log 2>&1 || true
tail -3 /tmp/out/test_cuda.log
setsid nohup bash -c 'python3 benchmarks/bench_throughput.py run --arch qwen2.5-0.5b --assets /tmp/assets \
  --params docs/results/qwen2.5-coder-0.5b-gpu/params.yaml --formatted /tmp/data/formatted --prepared /tmp/data/prepared \
  --stages train --only-variants '"$V"' --train-no-live \
  --override "{\"train\": {\"max_steps\": '"$N"', \"save_steps\": 100000}}" \
  --work /tmp/benchwork --out /tmp/out/tp_train_regional.json > /tmp/out/bench_train.log 2>&1; touch /tmp/out/DONE' \
  < /dev/null > /dev/null 2>&1 &
sleep 20; tail -c 300 /tmp/out/bench_train.log
