"""Scratch (not a benchmark of record): graphs backend variants in one process, random 0.5B weights, 972 prompts."""
import json, sys, time
sys.path.insert(0, ".")  # run from the repository root
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from sqltradeoff import generation

assets, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tok = AutoTokenizer.from_pretrained(assets)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(assets), dtype=torch.bfloat16).cuda().eval()
prompts = [json.loads(l)["prompt"] for l in open(".gpu/data/formatted/eval_zeroshot.jsonl")][:n]
res = {}
for v in ["nobucket", "bucket128", "bucket64", "nobucket", "bucket128", "liger_bucket128", "liger_bucket128"]:
    generation.GRAPH_WIDTH_STEP = 10 ** 9 if v == "nobucket" else 64 if v == "bucket64" else 128
    if v.startswith("liger") and "liger" not in res:
        generation.apply_liger_kernels(model); res["liger"] = True
    torch.cuda.synchronize(); t = time.perf_counter()
    texts, st = generation.generate(model, tok, prompts, batch_size=64, max_new_tokens=128, backend="graphs",
                                    progress=False, min_new_tokens=128)
    torch.cuda.synchronize(); s = time.perf_counter() - t
    d = st.as_dict()
    res.setdefault(v, []).append({"s": round(s, 2), "tok_s": round(d["generated_tokens"] / s), "first": d["first_batch_s"]})
    print(v, res[v][-1], flush=True)
json.dump({"card": torch.cuda.get_device_name(), "n": n, "res": res}, open(out, "w"), indent=1)
