# bash fast.sh: the fourth lease (real weights): predict reference vs static on all 972 dev questions
# (batch 64, agreement counted); one run of the study with the fast settings through the stage
# scripts (train@run1 one epoch with liger and no checkpointing, predict@run1 static batch 256,
# mmlu@run1 batched); training before vs after (300 steps); a cProfile of 60 steps of the fast training.
# Every part tars its outputs into /tmp/out as it finishes; `collect.sh` sends them back.
. /tmp/dev/env.sh
M=$(ls -d /tmp/proj/.cache/models/qwen2.5-coder-0.5b-instruct-q4_k_m-*/ | head -1)
B="python3 benchmarks/bench_throughput.py run --arch qwen2.5-0.5b --model-dir $M --params params.yaml --formatted data/formatted --prepared data/prepared --work /tmp/benchwork"
$B --stages predict --only-variants before,after --override '{"predict": {"batch_size": 64}}' \
  --out /tmp/out/tp_predict_real.json > /tmp/out/bench_predict.log 2>&1
cp /tmp/benchwork/qwen2.5-0.5b/pred_predict_*.jsonl /tmp/out/ 2>/dev/null
touch /tmp/out/PREDICT_DONE
# the run: params.yaml with the fast settings, a plan whose train commands log without DVCLive
sed -i 's/^  use_liger_kernel: false/  use_liger_kernel: true/; s/^  backend: reference   # GPU/  backend: static   # GPU/' params.yaml
grep -n "use_liger_kernel:\|gradient_checkpointing:\|backend:\|batch_size:" params.yaml > /tmp/out/params_fast.txt
cp params.yaml /tmp/out/params_fast.yaml
python3 -c "
import json; p = json.load(open('docs/results/qwen2.5-coder-0.5b-gpu/plan.json'))
for s in p:
    if s['name'].startswith('train@'): s['cmd'] += ' --no-live'
json.dump(p, open('/tmp/plan_fast.json', 'w'), indent=1)"
python3 scripts/stage_plan.py run --plan /tmp/plan_fast.json --timings /tmp/out/timings_fast.jsonl \
  train@run1 predict@run1 mmlu@run1 > /tmp/out/run_fast.log 2>&1
tar czf /tmp/out/run_fast.tgz models/run1/adapter metrics/train/run1/metrics.json data/predictions/run1.jsonl \
  data/mmlu/run1.jsonl metrics/mmlu/run1.json 2>/dev/null
touch /tmp/out/RUN_DONE
cp docs/results/qwen2.5-coder-0.5b-gpu/params.yaml params.yaml
$B --stages train --only-variants before,after --train-no-live \
  --override '{"train": {"max_steps": 300, "save_steps": 100000}}' --out /tmp/out/tp_train_real.json > /tmp/out/bench_train.log 2>&1
touch /tmp/out/TRAIN_DONE
sed -i 's/^  use_liger_kernel: false/  use_liger_kernel: true/; s/^  max_steps: -1/  max_steps: 60/; s/^  save_steps: 400/  save_steps: 100000/' params.yaml
python3 -m cProfile -o /tmp/out/train_fast.prof stages/train.py --run run1 --data data/formatted/train.jsonl \
  --out /tmp/prof_model --metrics-dir /tmp/prof_metrics --no-live > /tmp/out/profile.log 2>&1
python3 -c "
import pstats; s = pstats.Stats('/tmp/out/train_fast.prof'); s.sort_stats('tottime').print_stats(45); s.sort_stats('cumulative').print_stats(60)" > /tmp/out/profile.txt 2>&1
touch /tmp/out/PROFILE_DONE /tmp/out/BENCH_DONE
