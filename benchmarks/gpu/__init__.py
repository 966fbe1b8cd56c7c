"""The GPU benchmark (`benchmarks/bench_gpu.py`), one module per phase.

common     constants (the Mistral-7B shape, the chat template), logging, tables, FLOP counts,
           results files, the random-weight model
prepare    `bench_gpu.py prepare` (CPU): the tokenizer and the prompt data, through the library's
           download, prepare and format functions
train      the training phase: variants through `training.train` with a loaded model
infer      the generation and MMLU phases
tables     the markdown tables of a run
run        `bench_gpu.py run`: the peak phase and the phases in order
multi_gpu  `bench_gpu.py multi-gpu` / `stage-train`: the train stage on one and on several GPUs
"""
