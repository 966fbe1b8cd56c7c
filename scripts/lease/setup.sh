# bash setup.sh [DIR]: the first call of a lease (DIR, default .gpu/c1: whl/, antlr.tgz, data.tgz, assets.tgz, dev/, gguf parts if any)
set -e
D=${1:-.gpu/c1}
mkdir -p /tmp/site /tmp/bin /tmp/gguf /tmp/proj /tmp/out /tmp/dev
cp $D/dev/* /tmp/dev/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $D/whl/*.whl 2>&1 | grep -v -i warning | tail -3
[ -f $D/antlr.tgz ] && tar xzf $D/antlr.tgz -C /tmp/site
printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" > /tmp/bin/python; chmod +x /tmp/bin/python
tar cf - --exclude=./.gpu . | tar xf - -C /tmp/proj
tar xzf $D/data.tgz -C /tmp/proj
[ -f $D/assets.tgz ] && tar xzf $D/assets.tgz -C /tmp
mv $D/gguf.part* /tmp/gguf/ 2>/dev/null || true
. /tmp/dev/env.sh
cp docs/results/qwen2.5-coder-0.5b-gpu/params.yaml params.yaml
python -c "import trl, datasets, liger_kernel, gguf, peft, transformers, torch, yaml; print('ok trl', trl.__version__, 'peft', peft.__version__, 'tf', transformers.__version__, 'torch', torch.__version__, torch.cuda.get_device_name(0))"
python -c "import dvclive" 2>/dev/null && echo "dvclive: yes" || echo "dvclive: no (train with --no-live)"
nproc; free -g | head -2; df -h /tmp | tail -1
