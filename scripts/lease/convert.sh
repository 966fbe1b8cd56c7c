. /tmp/dev/env.sh
mkdir -p .cache/offline-models .cache/models
cat /tmp/gguf/gguf.part* > .cache/offline-models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
sha256sum .cache/offline-models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
python3 -c "from sqltradeoff.modeling import convert_gguf; print(convert_gguf('.cache/offline-models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf', '.cache/models'))"
touch /tmp/out/CONVERT_DONE
