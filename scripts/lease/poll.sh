# bash poll.sh SECONDS: wait (keeping the call, and so the machine, busy), then print the logs' tails and the GPU's load
sleep "$1"
ls /tmp/out; for f in /tmp/out/*.log; do echo "== $f"; tail -c 400 "$f" | tr '\r' '\n' | grep -v '^\s*$' | tail -n 2; done
cat /tmp/proj/timings_*.jsonl 2>/dev/null | cut -c1-100
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
