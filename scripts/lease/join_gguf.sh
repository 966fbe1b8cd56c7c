# bash scripts/lease/join_gguf.sh [PARTS]: run in the project copy (/tmp/proj). Joins the GGUF's parts (PARTS, default
# /tmp/gguf: gguf.part00, gguf.part01, ... carried one per call) into .cache/offline-models/qwen2.5-coder-0.5b-instruct-
# q4_k_m.gguf, checks its sha256 (exit 1 when a part is missing or wrong), converts it once to a Hugging Face directory
# under .cache/models (sqltradeoff.modeling.convert_gguf, about 60 s) and prints that directory as its last line.
# Used by convert.sh, predict_real.sh and real_run.sh.
set -e
P=${1:-/tmp/gguf}
G=.cache/offline-models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
mkdir -p .cache/offline-models .cache/models
cat "$P"/gguf.part* > $G
echo "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32  $G" | sha256sum -c >&2
python3 -c "from sqltradeoff.modeling import convert_gguf; print(convert_gguf('$G', '.cache/models'))" | tail -1
