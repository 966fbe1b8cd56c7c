. /tmp/dev/env.sh
bash scripts/lease/join_gguf.sh
touch /tmp/out/CONVERT_DONE
