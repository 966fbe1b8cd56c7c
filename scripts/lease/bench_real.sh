# bash bench_real.sh STAGES VARIANTS LIMIT: bench_throughput.py on the real converted weights (before/after side by side)
. /tmp/dev/env.sh
M=$(ls -d /tmp/proj/.cache/models/qwen2.5-coder-0.5b-instruct-q4_k_m-*/ | head -1)
python3 benchmarks/bench_throughput.py run --arch qwen2.5-0.5b --model-dir "$M" --params params.yaml \
  --formatted data/formatted --prepared data/prepared --stages "$1" --only-variants "$2" --limit "$3" \
  --override '{"predict": {"batch_size": 64}}' --work /tmp/benchwork --out /tmp/out/throughput_real.json > /tmp/out/bench.log 2>&1
echo "bench rc=$?" >> /tmp/out/bench.log
touch /tmp/out/BENCH_DONE
