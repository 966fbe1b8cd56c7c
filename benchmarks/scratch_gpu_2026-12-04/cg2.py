"""Scratch (not a benchmark of record): graphs backend with and without the grouped decode attention, one process."""
import json, sys, time
sys.path.insert(0, ".")  # run from the repository root
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from sqltradeoff import generation

assets, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tok = AutoTokenizer.from_pretrained(assets)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(assets), dtype=torch.bfloat16).cuda().eval()
rows = [json.loads(l) for l in open(".gpu/data/formatted/eval_zeroshot.jsonl")][:n]
prompts = [r["prompt"] for r in rows]
real = generation._use_grouped_decode
res = {}
# exactness on the card: fp32 copy, reference vs graphs texts (no min_new_tokens: outputs stop where they stop)
m32 = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(assets), dtype=torch.float32).cuda().eval()
m32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
for bs in (7, 32):
    a, _ = generation.generate(m32, tok, prompts[:64], batch_size=bs, max_new_tokens=24, backend="reference", progress=False)
    b, stb = generation.generate(m32, tok, prompts[:64], batch_size=bs, max_new_tokens=24, backend="graphs", progress=False)
    res[f"fp32_equal_bs{bs}"] = sum(x == y for x, y in zip(a, b))
    print("fp32 equal", bs, res[f"fp32_equal_bs{bs}"], "of", len(a), flush=True)
a, _ = generation.generate(model, tok, prompts[:64], batch_size=32, max_new_tokens=24, backend="reference", progress=False)
b, _ = generation.generate(model, tok, prompts[:64], batch_size=32, max_new_tokens=24, backend="graphs", progress=False)
res["bf16_equal_bs32"] = sum(x == y for x, y in zip(a, b))
print("bf16 equal", res["bf16_equal_bs32"], flush=True)
del m32
for v in ["graphs", "graphs_plain", "graphs", "graphs_plain"]:
    generation._use_grouped_decode = real if v == "graphs" else (lambda m: None)
    torch.cuda.synchronize(); t = time.perf_counter()
    texts, st = generation.generate(model, tok, prompts, batch_size=64, max_new_tokens=128, backend="graphs",
                                    progress=False, min_new_tokens=128)
    torch.cuda.synchronize(); s = time.perf_counter() - t
    d = st.as_dict()
    res.setdefault(v, []).append({"s": round(s, 2), "tok_s": round(d["generated_tokens"] / s), "first": d["first_batch_s"],
                                  "gen": d["generated_tokens"]})
    print(v, res[v][-1], flush=True)
json.dump({"card": torch.cuda.get_device_name(), "n": n, "res": res, "mem_gb": torch.cuda.max_memory_allocated() / 1e9}, open(out, "w"), indent=1)
