# bash study.sh [--base] RUN...: each RUN's training, then its evaluation stages (predict, MMLU, every
# adapter-scale point), all RUNs side by side on the one card; --base adds the base model's stages
# and its all-subject MMLU beside them. Logs and DONE markers in /tmp/out.
. /tmp/dev/env.sh
sed -i 's/^  backend: continuous   # GPU/  backend: reference   # GPU/; s/^  batch_size: 64   # GPU/  batch_size: 256   # GPU/' params.yaml
S="python3 scripts/stage_plan.py run --plan docs/results/qwen2.5-coder-0.5b-gpu/plan.json"
mkdir -p allmmlu
evals() { r=$1; $S --timings /tmp/proj/timings_eval_$r.jsonl "predict@$r" "mmlu@$r" "predict_scaled@$r-*" "mmlu_scaled@$r-*" >> /tmp/out/eval_$r.log 2>&1; touch /tmp/out/EVAL_DONE_$r; }
base=0; if [ "$1" = --base ]; then base=1; shift; fi
for r in "$@"; do ( $S --timings /tmp/proj/timings_train_$r.jsonl "train@$r" >> /tmp/out/train_$r.log 2>&1; touch /tmp/out/TRAIN_DONE_$r; evals $r ) & done
if [ $base = 1 ]; then ( $S --timings /tmp/proj/timings_eval_base.jsonl predict_base mmlu_base >> /tmp/out/eval_base.log 2>&1
  T0=$(date +%s); python3 stages/mmlu.py --name base --test data/prepared_allmmlu/mmlu_test.jsonl --dev data/prepared_allmmlu/mmlu_dev.jsonl --out-rows allmmlu/base.jsonl --out-metrics allmmlu/base.json >> /tmp/out/eval_all.log 2>&1; RC=$?
  echo "{\"stage\": \"mmlu_all@base\", \"seconds\": $(( $(date +%s) - T0 )), \"rc\": $RC}" >> /tmp/proj/timings_eval_base.jsonl; touch /tmp/out/BASE_DONE ) & fi
wait
touch /tmp/out/STUDY_DONE
