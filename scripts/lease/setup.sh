set -e
mkdir -p /tmp/site /tmp/bin /tmp/gguf /tmp/proj /tmp/out /tmp/dev
cp .gpu/c1/dev/* /tmp/dev/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/c1/whl/*.whl 2>&1 | grep -v -i warning | tail -3
tar xzf .gpu/c1/antlr.tgz -C /tmp/site
printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" > /tmp/bin/python; chmod +x /tmp/bin/python
tar cf - --exclude=./.gpu . | tar xf - -C /tmp/proj
tar xzf .gpu/c1/data.tgz -C /tmp/proj
tar xzf .gpu/c1/assets.tgz -C /tmp
mv .gpu/c1/gguf.part* /tmp/gguf/
. /tmp/dev/env.sh
cp docs/results/qwen2.5-coder-0.5b-gpu/params.yaml params.yaml
python -c "import trl, datasets, dvclive, liger_kernel, gguf, peft, transformers, torch, yaml; print('ok trl', trl.__version__, 'peft', peft.__version__, 'tf', transformers.__version__, 'torch', torch.__version__, torch.cuda.get_device_name(0))"
nproc; free -g | head -2; df -h /tmp | tail -1
