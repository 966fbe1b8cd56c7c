# bash scripts/lease/predict_real.sh: the predict backends on the real weights (Qwen2.5-Coder-0.5B-Instruct), all 972
# dev questions at batch 64, base model: reference (before) vs graphs (after) vs graphs + liger (after_liger), each a
# stages/predict.py process of benchmarks/bench_throughput.py; the prediction files come back for EX scoring on the CPU.
# Needs what train_regional.sh set up (/tmp/proj, /tmp/data, the wheels in /tmp/site) and the GGUF's parts in /tmp/gguf.
# Run it detached (setsid nohup ... &) and poll; outputs in /tmp/out (tp_predict_real.json, pred_*.jsonl, PREDICT_DONE).
cd /tmp/proj
. scripts/lease/stage_env.sh    # PYTHONPATH=/tmp/site, offline, faulthandler (a crash prints the Python stacks)
M=$(bash scripts/lease/join_gguf.sh 2> /tmp/out/predict_real.log) || { echo "join_gguf.sh failed" >> /tmp/out/predict_real.log;
  touch /tmp/out/PREDICT_DONE; exit 1; }
echo "model dir: $M" >> /tmp/out/predict_real.log
python3 benchmarks/bench_throughput.py run --arch qwen2.5-0.5b --model-dir "$M" \
  --params docs/results/qwen2.5-coder-0.5b-gpu/params.yaml --formatted /tmp/data/formatted --prepared /tmp/data/prepared \
  --stages predict --only-variants before,after,after_liger --override '{"predict": {"batch_size": 64}}' \
  --work /tmp/benchwork_pred --out /tmp/out/tp_predict_real.json >> /tmp/out/predict_real.log 2>&1
echo "bench rc=$?" >> /tmp/out/predict_real.log
find /tmp/benchwork_pred -name "pred_*.jsonl" -exec cp {} /tmp/out/ \;
touch /tmp/out/PREDICT_DONE
