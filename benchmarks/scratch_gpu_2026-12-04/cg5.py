"""Scratch (not a benchmark of record): graphs backend on the Mistral-7B layer shape (random bf16 weights, Qwen's
vocabulary as in bench_throughput), 128 prompts, batch 64: width buckets and grouped attention on/off, one process."""
import json, sys, time
sys.path.insert(0, ".")  # run from the repository root
sys.path.insert(0, "benchmarks")
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, MistralConfig
from sqltradeoff import generation
from bench_throughput import MISTRAL_7B_V02
assets, out = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(assets)
q = AutoConfig.from_pretrained(assets)
shape = {k: v for k, v in MISTRAL_7B_V02.items() if k not in ("architectures", "model_type")}
shape.update(vocab_size=q.vocab_size, bos_token_id=q.bos_token_id, eos_token_id=q.eos_token_id)
torch.manual_seed(0)
with torch.device("cuda"):
    model = AutoModelForCausalLM.from_config(MistralConfig(**shape), dtype=torch.bfloat16).eval()
model.generation_config.eos_token_id = q.eos_token_id
prompts = [json.loads(l)["prompt"] for l in open(".gpu/data/formatted/eval_zeroshot.jsonl")][:128]
real = generation._use_grouped_decode
res = {}
for v in ["bucket128", "nobucket", "bucket128", "nobucket", "plain_nobucket"]:
    generation.GRAPH_WIDTH_STEP = 10 ** 9 if "nobucket" in v else 128
    if v.startswith("plain"):
        def plain(m):
            a = m.config._attn_implementation
            return a
        generation._use_grouped_decode = plain
    torch.cuda.synchronize(); t = time.perf_counter()
    texts, st = generation.generate(model, tok, prompts, batch_size=64, max_new_tokens=128, backend="graphs",
                                    progress=False, min_new_tokens=128)
    torch.cuda.synchronize(); s = time.perf_counter() - t
    d = st.as_dict()
    res.setdefault(v, []).append({"s": round(s, 2), "tok_s": round(d["generated_tokens"] / s), "first": d["first_batch_s"]})
    print(v, res[v][-1], flush=True)
json.dump({"card": torch.cuda.get_device_name(), "res": res}, open(out, "w"), indent=1)
