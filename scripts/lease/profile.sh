# bash scripts/lease/profile.sh VARIANT [VARIANT...]: benchmarks/profile_train.py on the params files that train_regional.sh's
# benchmark wrote (/tmp/benchwork/qwen2.5-0.5b/params_train_VARIANT.yaml: random weights of the 0.5B shape), one after the
# other: 160 steps, phases timed over steps 101-140, the profiler over steps 141-160. Run it detached after /tmp/out/DONE
# (setsid nohup ... &) and poll; writes /tmp/out/profile_VARIANT.{json,log}, then /tmp/out/PROFILE_DONE.
cd /tmp/proj
. scripts/lease/stage_env.sh    # PYTHONPATH=/tmp/site, offline, faulthandler (a crash prints the Python stacks)
for V in "$@"; do
  python3 benchmarks/profile_train.py --params /tmp/benchwork/qwen2.5-0.5b/params_train_$V.yaml \
    --data /tmp/data/formatted/train.jsonl --steps 160 --warmup 100 --profile-steps 20 \
    --out /tmp/out/profile_$V.json > /tmp/out/profile_$V.log 2>&1 || echo "profile $V rc=$?" >> /tmp/out/profile_$V.log
done
touch /tmp/out/PROFILE_DONE
