. /tmp/dev/env.sh
cp -f timings_*.jsonl /tmp/out/ 2>/dev/null
tar czf /tmp/res.tgz models/*/adapter data/predictions data/mmlu metrics allmmlu /tmp/out 2>/dev/null
split -b 15M /tmp/res.tgz $OUT/res.tgz.
ls -la $OUT | tail -n +2; ls /tmp/out; for f in /tmp/out/*.log; do echo "== $f"; tail -c 600 $f | tr '\r' '\n' | tail -n 4; done; cat timings_*.jsonl 2>/dev/null | cut -c1-90
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
