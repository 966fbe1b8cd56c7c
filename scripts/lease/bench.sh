. /tmp/dev/env.sh
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py > /tmp/out/cuda_tests.log 2>&1
echo "cuda tests rc=$?" >> /tmp/out/cuda_tests.log
python3 benchmarks/bench_throughput.py run --arch qwen2.5-0.5b --assets /tmp/assets --params params.yaml \
  --formatted data/formatted --prepared data/prepared --stages mmlu,predict,train --limit 128 \
  --override '{"train": {"max_steps": 100, "save_steps": 100000}}' \
  --variant 'train:before={"train": {"gradient_checkpointing": true, "use_liger_kernel": false}}' \
  --variant 'train:nockpt={"train": {"gradient_checkpointing": false, "use_liger_kernel": false}}' \
  --variant 'train:after={"train": {"gradient_checkpointing": false, "use_liger_kernel": true}}' \
  --only-variants before,nockpt,after --out /tmp/out/throughput_qwen05.json
echo "bench rc=$?"
touch /tmp/out/BENCH_DONE
