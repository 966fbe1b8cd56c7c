# . scripts/lease/enter_proj.sh DIR (sourced, from the carried working tree): a fresh copy of the project in /tmp/proj
# (without .gpu/), DIR's data.tgz (formatted/ and prepared/) in /tmp/data and its assets.tgz (the Qwen config and
# tokenizer) in /tmp/assets; then cd /tmp/proj, stage_env.sh sourced, and the card and library versions printed.
# Used by train_regional.sh and graphs_diag.sh.
_d=${1:?usage: . scripts/lease/enter_proj.sh DIR}
rm -rf /tmp/proj /tmp/data && mkdir -p /tmp/proj /tmp/out /tmp/data
tar cf - --exclude=./.gpu . | tar xf - -C /tmp/proj
tar xzf "$_d/data.tgz" -C /tmp/data
tar xzf "$_d/assets.tgz" -C /tmp
cd /tmp/proj
. scripts/lease/stage_env.sh    # PYTHONPATH=/tmp/site, offline, faulthandler (a crash prints the Python stacks)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, transformers, peft, trl, accelerate; print(torch.__version__, transformers.__version__, peft.__version__, trl.__version__, accelerate.__version__)"
