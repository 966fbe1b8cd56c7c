# . scripts/lease/stage_env.sh (sourced in /tmp/proj by the lease scripts): what the stage scripts need on the card.
# The wheels carried in /tmp/site, no hub, unbuffered logs, Triton's cache kept for the lease, and Python's stacks
# printed on a crash (faulthandler).
export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false \
  DEEPEVAL_TELEMETRY_OPT_OUT=YES TRITON_CACHE_DIR=/tmp/triton PYTHONFAULTHANDLER=1
