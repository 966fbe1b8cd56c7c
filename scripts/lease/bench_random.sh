# bash bench_random.sh: benchmarks/bench_throughput.py on random-weight architectures, variants side by side:
# predict on Qwen2.5-0.5B's shape (256 prompts, batch 64), train on it (300 steps; waits for bitsandbytes,
# installed by the lease's second call), predict on Mistral-7B's layer shape (128 prompts, batch 64, bf16)
. /tmp/dev/env.sh
B="python3 benchmarks/bench_throughput.py run --params params.yaml --formatted data/formatted --prepared data/prepared --work /tmp/benchwork --assets /tmp/assets"
$B --arch qwen2.5-0.5b --stages predict --only-variants before,after,continuous,continuous_graphs --limit 256 \
  --override '{"predict": {"batch_size": 64}}' --out /tmp/out/tp_predict_05b.json > /tmp/out/bench_p05.log 2>&1
while ! python3 -c "import bitsandbytes" 2>/dev/null; do sleep 5; done
$B --arch qwen2.5-0.5b --stages train --only-variants before,after,compile \
  --override '{"train": {"max_steps": 300, "save_steps": 100000}}' --out /tmp/out/tp_train_05b.json > /tmp/out/bench_t05.log 2>&1
$B --arch mistral-7b --stages predict --only-variants before,after,continuous_graphs --limit 128 \
  --override '{"predict": {"batch_size": 64}, "model": {"load_in_4bit": false}}' --out /tmp/out/tp_predict_7b.json > /tmp/out/bench_p7b.log 2>&1
touch /tmp/out/BENCH_DONE
