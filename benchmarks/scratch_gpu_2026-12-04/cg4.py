"""Scratch (not a benchmark of record): liger kernels' exactness on the card, fp32 and bf16 copies of random 0.5B weights:
reference texts (plain model) vs graphs texts with liger applied."""
import json, sys
sys.path.insert(0, ".")  # run from the repository root
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from sqltradeoff import generation
assets, out = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(assets)
prompts = [json.loads(l)["prompt"] for l in open(".gpu/data/formatted/eval_zeroshot.jsonl")][:64]
res = {}
torch.manual_seed(0)
models = {dt: AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(assets), dtype=dt).cuda().eval() for dt in (torch.float32, torch.bfloat16)}
models[torch.bfloat16].load_state_dict({k: v.bfloat16() for k, v in models[torch.float32].state_dict().items()})
ref = {dt: generation.generate(m, tok, prompts, batch_size=32, max_new_tokens=24, progress=False)[0] for dt, m in models.items()}
plain = {dt: generation.generate(m, tok, prompts, batch_size=32, max_new_tokens=24, backend="graphs", progress=False)[0] for dt, m in models.items()}
for dt, m in models.items():
    generation.apply_liger_kernels(m)
lig = {dt: generation.generate(m, tok, prompts, batch_size=32, max_new_tokens=24, backend="graphs", progress=False)[0] for dt, m in models.items()}
for dt in models:
    res[str(dt)] = {"graphs_equal_reference": sum(a == b for a, b in zip(ref[dt], plain[dt])),
                    "graphs_liger_equal_reference": sum(a == b for a, b in zip(ref[dt], lig[dt])), "of": len(prompts)}
print(res)
json.dump({"card": torch.cuda.get_device_name(), "res": res}, open(out, "w"), indent=1)
