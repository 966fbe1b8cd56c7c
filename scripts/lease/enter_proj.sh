# bash scripts/lease/copy_proj.sh DIR: a fresh copy of the project in /tmp/proj (without .gpu/), DIR's data.tgz
# (formatted/ and prepared/) in /tmp/data and its assets.tgz (the Qwen config and tokenizer) in /tmp/assets.
# Used by train_regional.sh and graphs_diag.sh.
set -e
D=${1:?usage: copy_proj.sh DIR}
rm -rf /tmp/proj /tmp/data && mkdir -p /tmp/proj /tmp/out /tmp/data
tar cf - --exclude=./.gpu . | tar xf - -C /tmp/proj
tar xzf "$D/data.tgz" -C /tmp/data
tar xzf "$D/assets.tgz" -C /tmp
