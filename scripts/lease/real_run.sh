# bash scripts/lease/real_run.sh COMPILE: one run of the real-scale study with the fast settings, real weights, through
# the stage scripts (issue 10's "one run": train@run1 one epoch + predict@run1 972 questions + mmlu@run1 801 questions).
# Needs what train_regional.sh set up (/tmp/proj, /tmp/data with formatted/ and prepared/, the wheels in /tmp/site) and
# the GGUF in parts in /tmp/gguf (one part per call, carried during the polls). COMPILE: the train.torch_compile
# value (false | regional | regional_graphs: then eager attention, batches padded to 64). Settings over
# docs/results/qwen2.5-coder-0.5b-gpu/params.yaml: train use_liger_kernel true (without a compile), predict
# backend graphs with use_liger_kernel true; train logs without DVCLive (--no-live: no dvc on the card).
# Run it detached (setsid nohup ... &) and poll; outputs go to /tmp/out (timings_real.jsonl, run_real.log, run_real.tgz).
set -e
C=${1:-false}
cd /tmp/proj
. scripts/lease/stage_env.sh    # PYTHONPATH=/tmp/site, offline, faulthandler (a crash prints the Python stacks)
mkdir -p /tmp/bin data
printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" > /tmp/bin/python; chmod +x /tmp/bin/python
export PATH=/tmp/bin:$PATH
bash scripts/lease/join_gguf.sh        # the GGUF the GPU study's params.yaml names, converted into .cache/models
rm -rf data/formatted data/prepared && cp -r /tmp/data/formatted /tmp/data/prepared data/
cp docs/results/qwen2.5-coder-0.5b-gpu/params.yaml params.yaml
python - "$C" <<'PY'
import json, sys, yaml
p = yaml.safe_load(open("params.yaml"))
c = {"false": False, "true": True}.get(sys.argv[1], sys.argv[1])
p["train"].update(use_liger_kernel=c is False, torch_compile=c)     # liger cannot be compiled (check_compile)
if c == "regional_graphs":   # CUDA graphs need padded batches of a few shapes
    p["train"].update(padding_free=False, attention="eager", pad_to_multiple_of=64)   # sdpa + padding: NaN
p["predict"].update(backend="graphs", use_liger_kernel=True)
yaml.safe_dump(p, open("params.yaml", "w"), sort_keys=False)
plan = json.load(open("docs/results/qwen2.5-coder-0.5b-gpu/plan.json"))
for s in plan:
    if s["name"].startswith("train@"):
        s["cmd"] += " --no-live"
json.dump(plan, open("/tmp/plan_real.json", "w"), indent=1)
print("train", p["train"], "\npredict", p["predict"])
PY
cp params.yaml /tmp/out/params_real.yaml
python scripts/stage_plan.py run --plan /tmp/plan_real.json --timings /tmp/out/timings_real.jsonl \
  train@run1 predict@run1 mmlu@run1 > /tmp/out/run_real.log 2>&1 || echo "stage_plan rc=$?" >> /tmp/out/run_real.log
tar czf /tmp/out/run_real.tgz models/run1/adapter metrics/train/run1/metrics.json data/predictions/run1.jsonl \
  data/mmlu/run1.jsonl metrics/mmlu/run1.json 2>/dev/null || true
touch /tmp/out/RUN_DONE
