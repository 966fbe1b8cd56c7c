# bash scripts/lease/graphs_diag.sh [DIR] [STEPS]: isolate the eighth lease's SIGSEGV of
# train.torch_compile regional_graphs. Sets up like train_regional.sh (carry .gpu/t1 installed in /tmp/site, DIR default
# .gpu/n2), then starts five short bench_throughput.py trainings at once (STEPS steps each, default 30; random weights of the
# 0.5B shape; each its own process and work dir, so one crash cannot take another with it; their timings are not compared):
#   dyn      regional_graphs as in the eighth lease: SQLTRADEOFF_GRAPHS_DYNAMIC=1 (dynamic shapes), TORCH_LOGS=cudagraphs
#   static   regional_graphs with static shapes, its default since the ninth lease (one compile per padded length;
#            pytorch/pytorch#131009)
#   adamw    dyn with torch's AdamW instead of bitsandbytes' paged 8-bit AdamW
#   notrees  dyn with SQLTRADEOFF_GRAPHS_TREES=0 (inductor's plain cudagraphify, no CUDA graph trees)
#   padded   regional_padded: the same padded batches, regional compile, no CUDA graphs (the control)
# and tests/test_cuda.py beside them. Each stage's whole stderr (faulthandler's stacks, TORCH_LOGS) is kept in
# /tmp/diag_NAME/qwen2.5-0.5b/stderr_train_*.log and copied to /tmp/out/diag_NAME.stderr at the end; then /tmp/out/DIAG_DONE.
# Returns after starting them; poll with `bash scripts/lease/poll.sh 50`. The ninth lease ran it at 43fedc8, where
# static shapes were SQLTRADEOFF_GRAPHS_DYNAMIC=0 and dynamic ones the default, and the variants used sdpa attention.
set -e
D=${1:-.gpu/n2}
N=${2:-30}
. scripts/lease/enter_proj.sh "$D"   # the project in /tmp/proj, its data and assets; cd there
cat > /tmp/diag_one.sh <<SH
name=\$1; v=\$2; shift 2
env "\$@" timeout 540 python3 benchmarks/bench_throughput.py run --arch qwen2.5-0.5b --assets /tmp/assets \
  --params docs/results/qwen2.5-coder-0.5b-gpu/params.yaml --formatted /tmp/data/formatted --prepared /tmp/data/prepared \
  --stages train --only-variants \$v --train-no-live \
  --override '{"train": {"max_steps": $N, "save_steps": 100000}}' \
  --work /tmp/diag_\$name --out /tmp/out/diag_\$name.json > /tmp/out/diag_\$name.log 2>&1
echo "rc=\$?" >> /tmp/out/diag_\$name.log
cat /tmp/diag_\$name/qwen2.5-0.5b/stderr_train_*.log > /tmp/out/diag_\$name.stderr 2>/dev/null || true
SH
setsid nohup bash -c '
  bash /tmp/diag_one.sh dyn regional_graphs SQLTRADEOFF_GRAPHS_DYNAMIC=1 TORCH_LOGS=cudagraphs &
  bash /tmp/diag_one.sh static regional_graphs TORCH_LOGS=cudagraphs,recompiles &
  bash /tmp/diag_one.sh adamw regional_graphs_adamw SQLTRADEOFF_GRAPHS_DYNAMIC=1 TORCH_LOGS=cudagraphs &
  bash /tmp/diag_one.sh notrees regional_graphs SQLTRADEOFF_GRAPHS_DYNAMIC=1 SQLTRADEOFF_GRAPHS_TREES=0 &
  bash /tmp/diag_one.sh padded regional_padded &
  [ -f /tmp/out/test_cuda.log ] || timeout 400 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py > /tmp/out/test_cuda.log 2>&1 &
  wait; touch /tmp/out/DIAG_DONE' < /dev/null > /dev/null 2>&1 &
sleep 15; ls /tmp/out
