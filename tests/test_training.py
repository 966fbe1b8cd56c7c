"""training.py and stages/train.py: completion-only labels, learning, dropping, resume, CLI."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from sqltradeoff.errors import UserError
from sqltradeoff.io import sha256_file, write_jsonl
from sqltradeoff.modeling import load_model, load_tokenizer
from sqltradeoff.training import config_hash, tokenize_examples, train

REPO = Path(__file__).resolve().parents[1]

CFG = dict(epochs=1, max_steps=6, max_length=96, batch_size=2, grad_accum=1, learning_rate=5e-3,
           lr_scheduler="linear", warmup_ratio=0.0, lora_r=4, lora_alpha=8, lora_dropout=0.1,
           target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], optim_cuda="paged_adamw_8bit",
           optim_cpu="adamw_torch", gradient_checkpointing=False, save_steps=2, save_total_limit=2, seed=7)

QUESTIONS = ["How many singers do we have?", "Name every stadium.", "Average age of singers?",
             "Which singers are from France?", "List concerts in 2014.", "Oldest singer name?"]
ANSWERS = ["SELECT count(*) FROM singer", "SELECT name FROM stadium", "SELECT avg(age) FROM singer",
           "SELECT name FROM singer WHERE country = 'France'", "SELECT * FROM concert WHERE year = 2014",
           "SELECT name FROM singer ORDER BY age DESC LIMIT 1"]


def forbid_model_load(monkeypatch, message: str) -> None:
    """Make `modeling.load_model` fail the test with `message` (what must be decided without a model)."""
    import sqltradeoff.modeling

    def no_load(*a, **k):
        raise AssertionError(message)

    monkeypatch.setattr(sqltradeoff.modeling, "load_model", no_load)


def formatted_rows(tok, n=6):
    """Rows as the format stage writes them: prompt + completion == the rendered conversation."""
    rows = []
    for i in range(n):
        q, a = QUESTIONS[i % len(QUESTIONS)], ANSWERS[i % len(ANSWERS)]
        msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        full = tok.apply_chat_template(msgs, tokenize=False)
        prompt = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
        assert full.startswith(prompt)
        rows.append({"id": f"train-{i:05d}", "db_id": "concert_singer", "messages": msgs,
                     "prompt": prompt, "completion": full[len(prompt):]})
    return rows


@pytest.fixture(scope="module")
def tok(tiny_model_cfg):
    return load_tokenizer(tiny_model_cfg)


@pytest.fixture
def data(tok, tmp_path):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, formatted_rows(tok))
    return path


def completion_loss(model, tok, rows) -> float:
    examples, _ = tokenize_examples(rows, tok, 10_000)
    total, n = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            ids = torch.tensor([ex["input_ids"]])
            labels = torch.tensor([[t if m else -100 for t, m in zip(ex["input_ids"], ex["completion_mask"])]])
            total += float(model(input_ids=ids, labels=labels).loss)
            n += 1
    return total / n


def test_labels_cover_exactly_the_completion_tokens(tiny_model_cfg, tok, data, tmp_path):
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    seen = {}

    def inspect(trainer):
        seen["dataset"] = trainer.train_dataset
        seen["batch"] = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
        raise KeyboardInterrupt  # stop before training

    with pytest.raises(KeyboardInterrupt):
        train(CFG, tiny_model_cfg, data, tmp_path / "m", tmp_path / "metrics", trainer_hook=inspect)
    ds = seen["dataset"]
    assert len(ds) == len(rows)
    for row, ex in zip(rows, ds):
        ids, labels = ex["input_ids"], ex["labels"]
        # the whole rendered conversation, once: no second BOS, no extra EOS appended
        assert ids == tok(row["prompt"] + row["completion"], add_special_tokens=False)["input_ids"]
        n_prompt = len(tok(row["prompt"], add_special_tokens=False)["input_ids"])
        assert labels[:n_prompt] == [-100] * n_prompt
        assert labels[n_prompt:] == ids[n_prompt:]
        assert tok.decode(labels[n_prompt:]) == row["completion"]
        assert ids.count(tok.eos_token_id) == 2          # end of the user turn and of the assistant turn
    batch = seen["batch"]
    # the collator pads on the right with -100 labels and keeps the completion labels
    lab = batch["labels"]
    assert all(int((lab[i] != -100).sum()) == sum(1 for x in ds[i]["labels"] if x != -100) for i in range(2))


def test_tokenize_examples_drops_and_counts_long_examples(tok):
    rows = formatted_rows(tok)
    lengths = [len(tok(r["prompt"] + r["completion"], add_special_tokens=False)["input_ids"]) for r in rows]
    limit = sorted(lengths)[2]
    examples, stats = tokenize_examples(rows, tok, limit)
    assert stats["examples_used"] == sum(1 for n in lengths if n <= limit) == len(examples)
    assert stats["examples_dropped_too_long"] == sum(1 for n in lengths if n > limit) > 0
    assert stats["examples_total"] == len(rows)
    assert all(len(e["input_ids"]) <= limit for e in examples)


def test_tokenize_examples_batched_gives_the_ids_of_one_call_per_text(tok, monkeypatch):
    """The batched tokenizer calls give each example the ids (and completion mask) of one call per
    text, also across batch boundaries and for a completion whose first token merges with the prompt."""
    import sqltradeoff.training as training
    from sqltradeoff.modeling import token_ids

    rows = formatted_rows(tok, n=7)
    rows.append({"id": "merge", "prompt": "SELECT coun", "completion": "t(*) FROM singer"})
    calls = []

    def small_batches(tokenizer, texts, batch=512):
        calls.append(len(texts))
        return token_ids(tokenizer, texts, batch=3)

    monkeypatch.setattr(training, "token_ids", small_batches)
    examples, stats = tokenize_examples(rows, tok, 10_000)
    assert calls == [len(rows), len(rows)]            # two batched passes, not two calls per row
    assert len(examples) == len(rows)
    merges = 0
    for row, ex in zip(rows, examples):
        full = tok(row["prompt"] + row["completion"], add_special_tokens=False)["input_ids"]
        prompt = tok(row["prompt"], add_special_tokens=False)["input_ids"]
        n = next((i for i, (a, b) in enumerate(zip(prompt, full)) if a != b), len(prompt))
        merges += n < len(prompt)
        assert ex["input_ids"] == full
        assert ex["completion_mask"] == [0] * n + [1] * (len(full) - n)
    assert stats["prompt_completion_boundary_merges"] == merges == 1


def test_tokenize_examples_names_a_bad_row_before_tokenizing(tok):
    rows = formatted_rows(tok, n=3)
    rows[1] = {"id": "broken", "prompt": "x", "completion": None}
    with pytest.raises(UserError, match=r"row 2 \(id 'broken'\)"):
        tokenize_examples(rows, tok, 10_000)


def test_training_lowers_loss_on_its_own_batch_and_writes_outputs(tiny_model_cfg, tok, data, tmp_path):
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    base, _ = load_model(tiny_model_cfg)
    before = completion_loss(base, tok, rows)
    cfg = {**CFG, "max_steps": 12, "learning_rate": 3e-2, "lora_dropout": 0.0,
           "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
    info = train(cfg, tiny_model_cfg, data, tmp_path / "m", tmp_path / "metrics")
    tuned, _ = load_model(tiny_model_cfg, adapter=tmp_path / "m" / "adapter")
    after = completion_loss(tuned, tok, rows)
    assert after < before - 0.3, (before, after)
    adapter = tmp_path / "m" / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    saved = json.loads((adapter / "training_info.json").read_text())
    assert saved["steps"] == info["steps"] == 12
    assert saved["examples_used"] == 6 and saved["examples_dropped_too_long"] == 0
    assert saved["precision"] == "fp32" and saved["device"] == "cpu"
    metrics = json.loads((tmp_path / "metrics" / "metrics.json").read_text())
    assert metrics["steps"] == 12 and metrics["tokens_per_s"] > 0 and metrics["final_loss"] == info["final_loss"]
    loss_rows = (tmp_path / "metrics" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()
    assert loss_rows[0] == "step\tloss" and [int(r.split("\t")[0]) for r in loss_rows[1:]] == list(range(1, 13))
    assert (tmp_path / "metrics" / "plots" / "metrics" / "learning_rate.tsv").is_file()


def test_adapter_records_no_absolute_path_of_the_checkout(tiny_llama, tok, data, tmp_path, monkeypatch):
    """A model inside the working directory is recorded relative to it in every adapter file, so
    two clones in different places write the same adapter bytes."""
    import shutil

    checkout = tmp_path / "clone"
    shutil.copytree(tiny_llama, checkout / "models" / "tiny")
    monkeypatch.chdir(checkout)
    model_cfg = {"path": str(checkout / "models" / "tiny"), "revision": "main", "load_in_4bit": False,
                 "cache_dir": str(checkout / ".cache")}
    train({**CFG, "max_steps": 1}, model_cfg, data, checkout / "m", checkout / "metrics")
    adapter = checkout / "m" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == "models/tiny"
    assert json.loads((adapter / "training_info.json").read_text())["model"]["path"] == "models/tiny"
    for f in adapter.iterdir():
        if f.suffix in (".json", ".md"):
            assert str(tmp_path) not in f.read_text(), f.name
    tuned, _ = load_model(model_cfg, adapter=adapter)       # still loads on top of the params' model
    assert tuned is not None


def test_interrupted_run_resumes_from_last_checkpoint(tiny_model_cfg, data, tmp_path):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                raise KeyboardInterrupt("simulated interruption")

    full = train(CFG, tiny_model_cfg, data, tmp_path / "full", tmp_path / "mfull")
    with pytest.raises(KeyboardInterrupt):
        train(CFG, tiny_model_cfg, data, tmp_path / "int", tmp_path / "mint", callbacks=[Crash()])
    assert not (tmp_path / "int" / "adapter").exists()
    assert (tmp_path / "int" / "checkpoints" / "checkpoint-4").is_dir()
    resumed = train(CFG, tiny_model_cfg, data, tmp_path / "int", tmp_path / "mint")
    assert resumed["resumed_from"] == "checkpoint-4" and resumed["steps"] == full["steps"] == 6
    assert resumed["steps_this_run"] == 2
    a = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "int" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:   # same data order, optimizer and RNG state: the resumed run ends where the full one did
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    steps = [int(r.split("\t")[0]) for r in
             (tmp_path / "mint" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 7))   # each step logged once despite the interruption

    assert not (tmp_path / "int" / "checkpoints").exists()     # a finished run leaves none behind
    # a different configuration does not resume from these checkpoints
    other = train({**CFG, "learning_rate": 1e-3}, tiny_model_cfg, data, tmp_path / "int", tmp_path / "mint2")
    assert other["resumed_from"] is None and other["steps_this_run"] == 6


def test_a_diverged_run_stops_at_its_first_non_finite_step_and_writes_no_adapter(tiny_model_cfg, data, tmp_path):
    """NaN LoRA weights (what a too high learning rate or a bad kernel leaves; on a card, padded sdpa batches in
    bf16 did) stop the run at the first step whose gradient norm is NaN: one line naming the step, no adapter,
    no training info, and only the checkpoints from before that step (none is saved at it)."""
    from transformers import TrainerCallback

    class Poison(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step == 2:     # step 3 begins, after checkpoint-2 was saved
                with torch.no_grad():
                    next(p for n, p in model.named_parameters() if "lora_A" in n).fill_(float("nan"))

    with pytest.raises(UserError, match=r"^train: the grad norm was nan at step 3: the run diverged, so no adapter "
                                        r"is written \(the checkpoint checkpoint-2 is kept\)") as err:
        train({**CFG, "save_steps": 1, "save_total_limit": 5}, tiny_model_cfg, data, tmp_path / "m", tmp_path / "x",
              callbacks=[Poison()])
    assert "\n" not in str(err.value)
    assert not (tmp_path / "m" / "adapter").exists()
    assert sorted(p.name for p in (tmp_path / "m" / "checkpoints").glob("checkpoint-*")) == ["checkpoint-1",
                                                                                           "checkpoint-2"]
    from safetensors.torch import load_file       # the kept checkpoint is from before the NaN

    kept = load_file(tmp_path / "m" / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors")
    assert kept and all(torch.isfinite(t).all() for t in kept.values())


def test_bad_config_and_data_are_user_errors(tiny_model_cfg, tok, tmp_path):
    path = tmp_path / "t.jsonl"
    write_jsonl(path, formatted_rows(tok, 2))
    with pytest.raises(UserError, match="lora_r"):
        train({**CFG, "lora_r": 0}, tiny_model_cfg, path, tmp_path / "m", tmp_path / "x")
    with pytest.raises(UserError, match="max_length"):
        train({**CFG, "max_length": 3}, tiny_model_cfg, path, tmp_path / "m", tmp_path / "x")
    write_jsonl(path, [{"id": "a", "prompt": "x"}])
    with pytest.raises(UserError, match="completion"):
        train(CFG, tiny_model_cfg, path, tmp_path / "m", tmp_path / "x")
    assert not (tmp_path / "m" / "adapter").exists()


def _project(tmp_path: Path, model_cfg: dict, tok) -> Path:
    params = {"model": {k: v for k, v in model_cfg.items() if not k.startswith("_")},
              "train": {**CFG, "max_steps": 3},
              "runs": {"run1": {"learning_rate": 1e-3}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_jsonl(tmp_path / "data" / "formatted" / "train.jsonl", formatted_rows(tok, 4))
    return tmp_path


def _run_train(cwd: Path, *args: str):
    return subprocess.run([sys.executable, str(REPO / "stages" / "train.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_train_cli_end_to_end(tiny_model_cfg, tok, tmp_path):
    proj = _project(tmp_path, tiny_model_cfg, tok)
    res = _run_train(proj, "--run", "run1", "--data", "data/formatted/train.jsonl", "--out", "models/run1")
    assert res.returncode == 0, res.stderr
    info = json.loads((proj / "models/run1/adapter/training_info.json").read_text())
    assert info["steps"] == 3 and info["run_config"]["learning_rate"] == 1e-3
    assert info["examples_used"] == 4
    metrics = json.loads((proj / "metrics/train/run1/metrics.json").read_text())
    assert metrics["steps"] == 3 and "wall_time_s" in metrics
    assert (proj / "metrics/train/run1/plots/metrics/loss.tsv").is_file()
    assert not (proj / "dvc.yaml").exists()          # DVCLive must not write a dvc.yaml
    # only the outputs dvc.yaml declares (metrics.json, plots/) are in the DVCLive directory
    assert sorted(p.name for p in (proj / "metrics/train/run1").iterdir()) == ["metrics.json", "plots"]
    assert json.loads(res.stdout.strip().splitlines()[-1])["steps"] == 3

    bad = _run_train(proj, "--run", "run7", "--data", "data/formatted/train.jsonl", "--out", "models/run7")
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "run7" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_cuda_and_cpu_training_arguments():
    """CUDA cannot run here: check the arguments chosen for it (bf16, paged 8-bit AdamW) and for CPU."""
    from sqltradeoff.modeling import DeviceSettings
    from sqltradeoff.training import sft_config_kwargs

    cuda = sft_config_kwargs(CFG, DeviceSettings("cuda", torch.bfloat16, True), "ck")
    assert cuda["bf16"] is True and cuda["optim"] == "paged_adamw_8bit" and cuda["use_cpu"] is False
    cpu = sft_config_kwargs(CFG, DeviceSettings("cpu", torch.float32, False), "ck")
    assert cpu["bf16"] is False and cpu["fp16"] is False and cpu["optim"] == "adamw_torch" and cpu["use_cpu"]
    assert cpu["gradient_checkpointing"] is False          # TRL's default (on) is overridden
    assert cpu["completion_only_loss"] is True and cpu["packing"] is False
    from trl import SFTConfig
    args = SFTConfig(**cpu)                                # valid for this TRL / transformers
    assert args.bf16 is False and args.max_length == CFG["max_length"]


def test_unknown_scheduler_is_user_error(tiny_model_cfg, data, tmp_path):
    with pytest.raises(UserError, match="invalid training setting"):
        train({**CFG, "lr_scheduler": "zigzag"}, tiny_model_cfg, data, tmp_path / "m", tmp_path / "x")


# ---------------------------------------------------------------- throughput settings (issue 6)

def test_throughput_settings_are_validated_and_default_to_the_reference_recipe():
    from sqltradeoff.training import TRAIN_DEFAULTS, validate_config

    filled = validate_config(dict(CFG))
    assert {k: filled[k] for k in TRAIN_DEFAULTS} == {"padding_free": False, "attention": "sdpa",
                                                        "fp32_upcast": True, "use_liger_kernel": False,
                                                        "torch_compile": False, "pad_to_multiple_of": None,
                                                        "cpu_linear": "aten"}
    with pytest.raises(UserError, match="padding_free"):
        validate_config({**CFG, "padding_free": "yes"})
    with pytest.raises(UserError, match="fp32_upcast"):
        validate_config({**CFG, "fp32_upcast": 1})
    # the varlen kernel gets no mask: padded batches would attend to padding
    with pytest.raises(UserError, match="padding_free: true"):
        validate_config({**CFG, "attention": "torch_varlen", "batch_size": 2, "padding_free": False})
    validate_config({**CFG, "attention": "torch_varlen", "batch_size": 1, "padding_free": False})
    validate_config({**CFG, "attention": "torch_varlen", "batch_size": 4, "padding_free": True})


def test_padding_free_arguments_leave_length_limits_to_tokenize_examples():
    from trl import SFTConfig

    from sqltradeoff.modeling import DeviceSettings
    from sqltradeoff.training import sft_config_kwargs

    kw = sft_config_kwargs({**CFG, "padding_free": True}, DeviceSettings("cpu", torch.float32, False), "ck")
    assert kw["padding_free"] is True and kw["max_length"] is None
    assert "pad_to_multiple_of" not in kw        # unset: TRL's own default
    assert sft_config_kwargs({**CFG, "pad_to_multiple_of": 64, "attention": "eager"},
                             DeviceSettings("cpu", torch.float32, False), "ck")["pad_to_multiple_of"] == 64
    assert kw["include_num_input_tokens_seen"] == "all"      # no padding to leave out, no mask to count
    assert SFTConfig(**kw).padding_free is True
    kw = sft_config_kwargs(CFG, DeviceSettings("cpu", torch.float32, False), "ck")
    assert kw["padding_free"] is False and kw["max_length"] == CFG["max_length"]


def test_padding_free_batches_have_no_padding_and_the_same_loss(tiny_model_cfg, data, tmp_path):
    """One step on the same 3 examples: padded batch vs padding-free flat row (SDPA with the
    block-diagonal mask transformers derives from position_ids) give the same loss in fp32."""
    cfg = {**CFG, "max_steps": 1, "batch_size": 3, "lora_dropout": 0.0}
    seen = {}

    def probe(key):
        def hook(trainer):
            batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
            seen[key] = {k: v for k, v in batch.items() if hasattr(v, "shape")}
        return hook

    padded = train(cfg, tiny_model_cfg, data, tmp_path / "pad", tmp_path / "mpad", trainer_hook=probe("pad"))
    flat = train({**cfg, "padding_free": True}, tiny_model_cfg, data, tmp_path / "pf", tmp_path / "mpf",
                 trainer_hook=probe("pf"))
    lengths = seen["pad"]["attention_mask"].sum(1).tolist()
    assert seen["pad"]["input_ids"].shape == (3, max(lengths)) and len(set(lengths)) > 1   # padding present
    assert seen["pf"]["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in seen["pf"]
    assert seen["pf"]["cu_seq_lens_q"].tolist() == [0, lengths[0], lengths[0] + lengths[1], sum(lengths)]
    assert seen["pf"]["position_ids"][0, lengths[0]].item() == 0       # positions restart per example
    assert flat["tokens_seen"] == padded["tokens_seen"]     # pad-id tokens inside examples are counted too
    assert flat["final_loss"] == pytest.approx(padded["final_loss"], rel=1e-4)


def test_attention_setting_switches_the_implementation_or_fails_clearly(tiny_model_cfg, data, tmp_path,
                                                                       monkeypatch):
    from sqltradeoff.attention import set_attention, varlen_available

    seen = {}
    train({**CFG, "max_steps": 1, "attention": "eager"}, tiny_model_cfg, data, tmp_path / "e", tmp_path / "me",
          trainer_hook=lambda t: seen.update(attn=t.model.config._attn_implementation))
    assert seen["attn"] == "eager"
    model, _ = load_model(tiny_model_cfg)
    with pytest.raises(UserError, match="train.attention 'no_such_kernel'"):
        set_attention(model, "no_such_kernel")
    if not varlen_available()[0]:       # CPU machines: the CUDA kernel is refused before the model loads
        forbid_model_load(monkeypatch, "the model was loaded before the attention setting was checked")
        with pytest.raises(UserError, match="torch_varlen.*unavailable here"):
            train({**CFG, "attention": "torch_varlen", "padding_free": True}, tiny_model_cfg, data,
                  tmp_path / "v", tmp_path / "mv")
        assert not (tmp_path / "v" / "adapter").exists()


def test_one_process_is_pinned_to_one_gpu_unless_launched_distributed():
    from sqltradeoff.training import pin_single_gpu

    env = {}
    assert pin_single_gpu(env) and env == {"CUDA_VISIBLE_DEVICES": "0"}
    env = {"CUDA_VISIBLE_DEVICES": "2,3"}            # the user's choice stands
    assert not pin_single_gpu(env) and env == {"CUDA_VISIBLE_DEVICES": "2,3"}
    env = {"WORLD_SIZE": "2", "LOCAL_RANK": "1"}     # accelerate launch / torchrun
    assert not pin_single_gpu(env) and "CUDA_VISIBLE_DEVICES" not in env


def test_data_parallel_launch_runs_the_stage_once_per_process_and_writes_once(tiny_model_cfg, tok, tmp_path):
    """A data-parallel launch with 2 processes (on CPU here, gloo; on GPUs the same code with NCCL):
    both ranks train, rank 0 alone prepares checkpoints, logs and writes the adapter."""
    proj = _project(tmp_path, tiny_model_cfg, tok)
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["train"]["max_steps"] = -1                  # one epoch
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    with socket.socket() as sock:                       # a free port for the process group
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the command of docs/multi-gpu.md; without GPUs the ranks train on CPU (gloo)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(port),
           str(REPO / "stages" / "train.py"), "--run", "run1", "--data", "data/formatted/train.jsonl",
           "--out", "models/run1"]
    res = subprocess.run(cmd, cwd=proj, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads((proj / "models/run1/adapter/training_info.json").read_text())
    # 4 examples, batch 2 per process x 2 processes = 4 per optimizer step: 1 step per epoch
    # (one process would take 2)
    assert info["steps"] == 1 and info["examples_used"] == 4
    rows = (proj / "metrics/train/run1/plots/metrics/loss.tsv").read_text().splitlines()[1:]
    assert [int(r.split("\t")[0]) for r in rows] == list(range(1, info["steps"] + 1))   # logged once per step
    assert not list((proj / "models/run1").glob(".adapter.*"))
    assert not (proj / "models/run1/checkpoints").exists()    # removed once, by rank 0, after the adapter


def test_a_run_that_finished_training_but_not_its_adapter_ends_at_max_steps(tiny_model_cfg, data, tmp_path):
    """Interrupted after the final checkpoint (step 4, inside the second epoch of 3 steps) but before
    the adapter was written: transformers would resume from that checkpoint with a 5th step; the run
    must end at max_steps with the weights of an uninterrupted run."""
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    cfg = {**CFG, "max_steps": 4, "save_steps": 2}

    class CrashAtEnd(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            raise KeyboardInterrupt("simulated interruption after the last step")

    full = train(cfg, tiny_model_cfg, data, tmp_path / "full", tmp_path / "mfull")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tiny_model_cfg, data, tmp_path / "int", tmp_path / "mint", callbacks=[CrashAtEnd()])
    assert (tmp_path / "int" / "checkpoints" / "checkpoint-4").is_dir()
    resumed = train(cfg, tiny_model_cfg, data, tmp_path / "int", tmp_path / "mint")
    assert resumed["steps"] == full["steps"] == 4
    assert resumed["resumed_from"] == "checkpoint-2" and resumed["steps_this_run"] == 2
    a = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "int" / "adapter" / "adapter_model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k

    # the finished run left no checkpoints: the same configuration again trains from scratch, identically
    again = train(cfg, tiny_model_cfg, data, tmp_path / "full", tmp_path / "mfull")
    assert again["resumed_from"] is None and again["steps_this_run"] == 4
    c = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(a[k], c[k]) for k in a)


# ---------------------------------------------------------------- robustness (issue 14 §4)

def test_incomplete_checkpoints_are_removed_and_the_run_resumes_from_the_newest_complete_one(
        tiny_model_cfg, data, tmp_path, capsys):
    """A kill while a checkpoint is written leaves it without trainer_state.json, or with its weights
    cut short: neither counts; the run resumes from the complete older one and ends where an
    uninterrupted run ends."""
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from sqltradeoff.training import checkpoint_problem, latest_checkpoint

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:   # checkpoints 1-5 written
                raise KeyboardInterrupt("simulated interruption")

    cfg = {**CFG, "save_steps": 1, "save_total_limit": 5}
    full = train(cfg, tiny_model_cfg, data, tmp_path / "full", tmp_path / "mfull")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tiny_model_cfg, data, tmp_path / "int", tmp_path / "mint", callbacks=[Crash()])
    ck = tmp_path / "int" / "checkpoints"
    assert [checkpoint_problem(ck / f"checkpoint-{i}") for i in (3, 4, 5)] == [None, None, None]
    (ck / "checkpoint-5" / "trainer_state.json").unlink()          # killed before the state was written
    weights = ck / "checkpoint-4" / "adapter_model.safetensors"    # killed while the weights were written
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert checkpoint_problem(ck / "checkpoint-5") == "trainer_state.json is missing"
    assert "adapter_model.safetensors is incomplete" in checkpoint_problem(ck / "checkpoint-4")
    assert latest_checkpoint(ck) == ck / "checkpoint-3"
    opt = ck / "checkpoint-3" / "optimizer.pt"                      # a cut-short optimizer state counts too
    saved = opt.read_bytes()
    opt.write_bytes(saved[:100])
    assert checkpoint_problem(ck / "checkpoint-3") == "optimizer.pt is incomplete or corrupt"
    opt.write_bytes(saved)
    capsys.readouterr()

    resumed = train(cfg, tiny_model_cfg, data, tmp_path / "int", tmp_path / "mint")
    err = capsys.readouterr().err
    assert "removing incomplete checkpoint" in err and "checkpoint-5" in err and "checkpoint-4" in err
    assert resumed["resumed_from"] == "checkpoint-3" and resumed["steps_this_run"] == 3
    assert resumed["steps"] == full["steps"] == 6
    a = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "int" / "adapter" / "adapter_model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


# ---------------------------------------------------------------- Ctrl-C / SIGTERM (issues 11, 14)

@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_long_backward_pass_within_seconds(signum):
    """One backward call of a deep stack takes seconds of C++ work; the signal (sent from another
    thread once the backward pass has begun) stops it at the next layer, with the signal named.

    Alone the stop comes 2-15 ms after the signal; once, inside the full suite (a CI try on the
    2-core Zen 4, 2026-12-03), it came 2.0 s after it, cause not found. So the backward pass is made
    long (about 7 s on that machine) and the test asks for what the issue asks: a stop within seconds, long
    before the pass would have ended on its own."""
    import signal
    import threading
    import time

    from sqltradeoff.interrupt import TrainingInterrupted, interruptible

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(512, 512) for _ in range(192)])   # a full backward of ~7 s
    x = torch.randn(4096, 512)
    sent = {}

    def send_soon(grad):        # the backward pass has begun: signal from elsewhere 0.2 s later
        def later():
            time.sleep(0.2)
            sent["t"] = time.perf_counter()
            os.kill(os.getpid(), getattr(signal, signum))
        threading.Thread(target=later, daemon=True).start()

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with interruptible(model) as stop:
        out = model(x)
        out.register_hook(send_soon)
        with pytest.raises(TrainingInterrupted) as exc:
            out.square().sum().backward()
        stopped = time.perf_counter()
    assert exc.value.signum == getattr(signal, signum) and stop.signum == exc.value.signum
    assert exc.value.exit_status == 128 + getattr(signal, signum)
    assert stopped - sent["t"] < 2.5
    # the same backward pass runs well past that without a signal (the stop was not its end)
    out = model(x)
    t1 = time.perf_counter()
    out.square().sum().backward()
    assert time.perf_counter() - t1 > 2 * (stopped - sent["t"])
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before   # restored
    assert all(not m._forward_pre_hooks for m in model.modules())                          # hooks removed


_DRIVER = r'''
import os, sys, pathlib
sys.path.insert(0, {repo!r})
import sqltradeoff.training as training

marker = pathlib.Path(sys.argv[1])
real_train = training.train


def train(*args, **kwargs):
    def hook(trainer):      # tell the test when a backward pass after the first checkpoint begins
        layers = trainer.model.get_base_model().model.layers

        def in_backward(grad):
            marker.write_text("backward")

        def on_forward(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            if trainer.state.global_step >= 1 and out.requires_grad:
                out.register_hook(in_backward)
        layers[-1].register_forward_hook(on_forward)
    return real_train(*args, trainer_hook=hook, **kwargs)


training.train = train
sys.argv = ["train.py", *sys.argv[2:]]
import runpy
runpy.run_path({stage!r}, run_name="__main__")
'''


def _slow_model(tiny_llama: Path, dest: Path) -> Path:
    """The tiny Llama's tokenizer with wider, deeper random weights: a step takes seconds on 1 thread."""
    import shutil

    from transformers import LlamaConfig, LlamaForCausalLM

    shutil.copytree(tiny_llama, dest)
    base = LlamaConfig.from_pretrained(tiny_llama)
    cfg = LlamaConfig(vocab_size=base.vocab_size, hidden_size=512, intermediate_size=2048, num_hidden_layers=6,
                      num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=4096,
                      eos_token_id=base.eos_token_id, bos_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(dest)
    return dest


def test_ctrl_c_stops_the_train_stage_mid_backward_within_seconds(tiny_llama, tiny_model_cfg, tok, tmp_path):
    """SIGINT while a CPU backward pass runs: the stage exits 130 within seconds with one line,
    keeping the complete checkpoint of step 1 and writing no adapter."""
    import signal
    import time

    from sqltradeoff.training import checkpoint_problem

    model_cfg = {**tiny_model_cfg, "path": str(_slow_model(tiny_llama, tmp_path / "slow"))}
    (tmp_path / "proj").mkdir()
    proj = _project(tmp_path / "proj", model_cfg, tok)
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["train"].update(max_steps=4, save_steps=1, batch_size=2, max_length=4096)
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    long_rows = formatted_rows(tok, 4)
    for r in long_rows:     # long examples: the backward pass of one micro-batch takes seconds
        r["completion"] = (r["completion"].split("<|im_end|>")[0] + " ") * 40 + "<|im_end|>\n"
    write_jsonl(proj / "data" / "formatted" / "train.jsonl", long_rows)
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER.format(repo=str(REPO), stage=str(REPO / "stages" / "train.py")))
    marker = tmp_path / "in_backward"
    env = {**os.environ, "SQLTRADEOFF_CPU_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(driver), str(marker), "--run", "run1", "--data",
                             "data/formatted/train.jsonl", "--out", "models/run1"], cwd=proj, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate()[1][-3000:]
        sent = time.time()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        waited = time.time() - sent
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert waited < 5, f"took {waited:.1f} s to stop"
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    said = [ln for ln in lines if "interrupted" in ln]
    assert len(said) == 1 and said[0] == lines[-1], lines[-5:]
    assert said[0].startswith("interrupted by SIGINT after step 1: resume from ") and "checkpoint-1" in said[0]
    assert "Traceback" not in err
    ck = proj / "models" / "run1" / "checkpoints"
    assert checkpoint_problem(ck / "checkpoint-1") is None and not (ck / "checkpoint-2").exists()
    assert not (proj / "models" / "run1" / "adapter").exists()


# ---------------------------------------------------------------- liger kernel, injected model (issue 10)

def test_liger_kernel_is_refused_before_the_model_loads_where_it_cannot_run(tiny_model_cfg, data, tmp_path,
                                                                            monkeypatch):
    from sqltradeoff.modeling import DeviceSettings
    from sqltradeoff.modeling import require_liger
    from sqltradeoff.training import sft_config_kwargs, validate_config

    forbid_model_load(monkeypatch, "the model was loaded before train.use_liger_kernel was checked")
    with pytest.raises(UserError, match="use_liger_kernel is true, but liger-kernel runs only on a CUDA GPU"):
        train({**CFG, "use_liger_kernel": True}, tiny_model_cfg, data, tmp_path / "m", tmp_path / "x")
    with pytest.raises(UserError, match="train.use_liger_kernel"):
        validate_config({**CFG, "use_liger_kernel": "yes"})
    cuda = DeviceSettings("cuda", torch.bfloat16, False)
    import transformers.utils

    monkeypatch.setattr(transformers.utils, "is_liger_kernel_available", lambda: False)
    with pytest.raises(UserError, match="params: train.use_liger_kernel is true, but liger-kernel is not installed"):
        require_liger("train.use_liger_kernel", cuda=True)
    monkeypatch.setattr(transformers.utils, "is_liger_kernel_available", lambda: True)
    require_liger("train.use_liger_kernel", cuda=True)
    # TRL's SFTConfig gets it under its own name; off by default
    assert sft_config_kwargs({**CFG, "use_liger_kernel": True}, cuda, "ck")["use_liger_kernel"] is True
    assert sft_config_kwargs(CFG, cuda, "ck")["use_liger_kernel"] is False
    # train.torch_compile: the Trainer's torch.compile of the model, off by default
    assert sft_config_kwargs({**CFG, "torch_compile": True}, cuda, "ck")["torch_compile"] is True
    assert sft_config_kwargs(CFG, cuda, "ck")["torch_compile"] is False
    assert not (tmp_path / "m").exists()


def test_train_takes_a_loaded_model_and_a_logger(tiny_model_cfg, data, tmp_path, monkeypatch):
    """A benchmark passes its own model (no load) and logger (no DVCLive); the result is the
    same adapter as a run that loads the model itself."""
    from safetensors.torch import load_file


    model, tokenizer = load_model(tiny_model_cfg, for_training=True)
    reference = train(CFG, tiny_model_cfg, data, tmp_path / "ref", tmp_path / "mref")

    class Logger:
        def __init__(self):
            self.step, self.logged, self.ended = 0, [], False

        def log_metric(self, key, value):
            self.logged.append((self.step, key, value))

        def make_summary(self):
            pass

        def end(self):
            self.ended = True

    forbid_model_load(monkeypatch, "train() loaded a model although one was passed")
    log = Logger()
    info = train(CFG, tiny_model_cfg, data, tmp_path / "inj", tmp_path / "minj", model=model, tokenizer=tokenizer,
                 live=log)
    assert info["steps"] == reference["steps"] == 6 and log.ended
    assert sorted({s for s, k, _ in log.logged if k == "loss"}) == list(range(1, 7))
    assert not (tmp_path / "minj" / "plots").exists()          # nothing of DVCLive's
    a = load_file(tmp_path / "ref" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "inj" / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # live=False: no per-step logging at all (the module's own load_model binding is not patched)
    # and a metrics.json an earlier run left there (DVCLive's summary of another run) is replaced, not merged
    (tmp_path / "mnolog").mkdir()
    (tmp_path / "mnolog" / "metrics.json").write_text(json.dumps({"loss": 123.0, "step": 2, "grad_norm": 9.0}))
    fresh, _ = load_model(tiny_model_cfg, for_training=True)
    nolog = train(CFG, tiny_model_cfg, data, tmp_path / "nolog", tmp_path / "mnolog", model=fresh,
                  tokenizer=tokenizer, live=False)
    assert nolog["steps"] == 6 and not (tmp_path / "mnolog" / "plots").exists()
    summary = json.loads((tmp_path / "mnolog" / "metrics.json").read_text())
    assert summary["steps"] == 6 and summary["final_loss"] == nolog["final_loss"]
    assert not {"loss", "step", "grad_norm"} & set(summary)


def test_target_modules_that_name_no_module_are_refused_before_the_weights_load(tiny_model_cfg, tok, tmp_path,
                                                                               monkeypatch):
    """`target_modules: [no_such_proj]` (issue 14 §3): one line naming the module and the model's linear
    layers, from the config on the meta device; `load_model` is never called."""
    import sqltradeoff.modeling as modeling

    path = tmp_path / "t.jsonl"
    write_jsonl(path, formatted_rows(tok, 2))
    loads = []
    monkeypatch.setattr(modeling, "load_model", lambda *a, **k: loads.append(a) or (_ for _ in ()).throw(
        AssertionError("weights loaded")))
    with pytest.raises(UserError, match=r"train.target_modules no_such_proj name no module of this model "
                                        r"\(llama\); its linear layers are .*q_proj") as err:
        train({**CFG, "target_modules": ["q_proj", "no_such_proj"]}, tiny_model_cfg, path, tmp_path / "m",
              tmp_path / "x")
    assert "\n" not in str(err.value) and loads == []
    # full dotted names and suffixes fit as they do in peft
    modeling.check_target_modules(tiny_model_cfg, ["self_attn.q_proj", "model.layers.0.mlp.up_proj", "v_proj"])
    modeling.check_target_modules(tiny_model_cfg, "all-linear")
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------- CPU speed: compact LM head, oneDNN layers (issue 11)

def _fused_loss_and_grad(model, ids, labels, compact):
    from sqltradeoff.training import compact_lm_head

    model.zero_grad()
    with compact_lm_head(compact) as active:
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    loss = -out.log_probs.sum() / out.label_mask.sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return active, float(loss.detach()), float(out.is_top1.sum()), grads


def test_compact_lm_head_scores_only_labelled_positions_with_the_same_loss_and_gradients(tiny_model_cfg, tok,
                                                                                       monkeypatch):
    """On the CPU, TRL's fused LM head scores every position; inside `compact_lm_head` only the
    labelled ones, as TRL does on CUDA: the same loss, token accuracy and LoRA gradients (fp32)."""
    from peft import LoraConfig, get_peft_model
    from trl.kernels import chunked_logprob
    from trl.trainer.utils import add_fused_lm_head

    model, _ = load_model(tiny_model_cfg, for_training=True)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))   # as SFTTrainer does
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                             lora_dropout=0.0, task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():     # B = 0 at init would leave A without a gradient
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    examples, _ = tokenize_examples(formatted_rows(tok, 2), tok, 10_000)
    ex = examples[0]
    ids = torch.tensor([ex["input_ids"]])
    labels = torch.tensor([[t if m else -100 for t, m in zip(ex["input_ids"], ex["completion_mask"])]])
    rows = []
    original = chunked_logprob.ChunkedLogProbFunction.apply

    def spy(hidden, *args):
        rows.append(hidden.shape[0])
        return original(hidden, *args)

    monkeypatch.setattr(chunked_logprob.ChunkedLogProbFunction, "apply", spy)
    import trl.trainer.utils as trl_utils
    full = _fused_loss_and_grad(model, ids, labels, compact=False)
    compact = _fused_loss_and_grad(model, ids, labels, compact=True)
    n_labelled = int((labels[:, 1:] != -100).sum())
    assert rows == [ids.shape[1] - 1, n_labelled] and n_labelled < ids.shape[1] - 1
    assert full[0] is False and compact[0] is True
    assert compact[1] == pytest.approx(full[1], abs=1e-5) and compact[2] == full[2]
    assert full[3].keys() == compact[3].keys() and any("lora_A" in k for k in full[3])
    for name in full[3]:
        assert torch.allclose(full[3][name], compact[3][name], atol=1e-6, rtol=1e-4), name
    assert trl_utils._use_triton(torch.device("cpu")) is False          # restored after the block


def test_cpu_training_with_onednn_layers_matches_aten_and_compact_head_matches_full(tiny_model_cfg, data, tmp_path):
    """`train.cpu_linear: onednn` (frozen base layers through oneDNN, packed weights) and the compact
    LM head give the adapter of torch's own path up to float rounding; the base layers are patched and
    the LoRA matrices are not."""
    from safetensors.torch import load_file

    from sqltradeoff import onednn

    if not onednn.available():
        pytest.skip("this torch build lacks the oneDNN linear ops")
    cfg = {**CFG, "lora_dropout": 0.0, "learning_rate": 1e-2}
    seen = {}

    def inspect(trainer):
        layers = dict(trainer.model.named_modules())
        seen["base"] = [n for n, m in layers.items() if n.endswith("q_proj.base_layer")
                        and getattr(m, "_onednn_fn", None) is not None]

    ref = train(cfg, tiny_model_cfg, data, tmp_path / "ref", tmp_path / "mref", live=False, cpu_compact_lm_head=False)
    fast = train({**cfg, "cpu_linear": "onednn"}, tiny_model_cfg, data, tmp_path / "fast", tmp_path / "mfast",
                 live=False, trainer_hook=inspect)
    assert len(seen["base"]) == 2                                  # the tiny Llama's 2 layers
    assert fast["config_hash"] == ref["config_hash"]               # a speed setting: resumable either way
    assert fast["run_config"]["cpu_linear"] == "onednn" and ref["run_config"]["cpu_linear"] == "aten"
    a = load_file(tmp_path / "ref" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "fast" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4), (k, float((a[k] - b[k]).abs().max()))
        if "lora_B" in k:            # zero at init: moved, so LoRA's (unpacked) layers got their gradients
            assert float(b[k].abs().max()) > 1e-3
    assert fast["final_loss"] == pytest.approx(ref["final_loss"], abs=1e-4)


# ---------------------------------------------------------------- regional compilation (issue 10)

def compile_recorder():
    """(a callback recording each step's logged loss and inductor's count of compiled graphs, a
    `trainer_hook` that also records each batch's length and the trainer's compile plugin and callbacks)."""
    from torch._dynamo.utils import counters
    from transformers import TrainerCallback

    class Record(TrainerCallback):
        def __init__(self):
            self.losses, self.graphs, self.lengths, self.seen = [], [], [], {}

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append(logs["loss"])

        def on_step_end(self, args, state, control, **kw):
            self.graphs.append(counters["stats"]["unique_graphs"])

    rec = Record()

    def hook(trainer):
        collate = trainer.data_collator

        def recording(examples):
            batch = collate(examples)
            rec.lengths.append(batch["input_ids"].shape[1])
            return batch
        trainer.data_collator = recording
        rec.seen.update(plugin=trainer.accelerator.state.dynamo_plugin,
                        callbacks=[type(c).__name__ for c in trainer.callback_handler.callbacks])
    return rec, hook

def test_regional_compile_compiles_each_block_once_for_every_length_and_trains_like_eager(tiny_model_cfg, tok,
                                                                                           tmp_path):
    """`torch_compile: regional`: accelerate compiles the decoder blocks with dynamic shapes when the
    trainer prepares the model, so padding-free batches of other lengths compile nothing new after the
    first step (the whole-model compile recompiled for new lengths: 3x slower on an H200); the losses
    are eager's (no dropout: the same sums, up to inductor's float reassociation)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    rows = formatted_rows(tok, 12)
    path = tmp_path / "train.jsonl"
    write_jsonl(path, rows)
    run = {**CFG, "max_steps": 4, "batch_size": 3, "lora_dropout": 0.0, "padding_free": True, "save_steps": 100}
    (eager, eager_hook), (compiled, compiled_hook) = compile_recorder(), compile_recorder()
    train(run, tiny_model_cfg, path, tmp_path / "eager", tmp_path / "me", callbacks=[eager], trainer_hook=eager_hook)
    torch._dynamo.reset()
    counters.clear()
    train({**run, "torch_compile": "regional"}, tiny_model_cfg, path, tmp_path / "compiled", tmp_path / "mc",
          callbacks=[compiled], trainer_hook=compiled_hook)
    assert len(set(eager.lengths)) >= 3, eager.lengths            # the steps really had different lengths
    assert compiled.seen["plugin"].use_regional_compilation and compiled.seen["plugin"].dynamic
    assert compiled.graphs[0] > 0, "nothing was compiled"
    assert compiled.graphs == [compiled.graphs[0]] * len(compiled.graphs), compiled.graphs
    assert len(compiled.losses) == len(eager.losses) == 4
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-4)
    info = json.loads((tmp_path / "compiled" / "adapter" / "training_info.json").read_text())
    assert info["run_config"]["torch_compile"] == "regional"
    with pytest.raises(UserError, match="train.torch_compile must be true, false, regional or regional_graphs"):
        train({**run, "torch_compile": "yes"}, tiny_model_cfg, path, tmp_path / "bad", tmp_path / "mb")


def test_regional_graphs_pads_batches_to_a_few_shapes_and_trains_like_eager(tiny_model_cfg, tok, tmp_path):
    """`torch_compile: regional_graphs` is regional compilation with mode "reduce-overhead" (CUDA graphs,
    recorded once per batch shape on a card): batches are padded to a multiple of `pad_to_multiple_of`
    (TRL's collator), compiled with static shapes (one compile per padded length: a length seen before compiles
    nothing new), every step starts a new graph-tree iteration, and the losses are those of eager unpadded
    batches (no dropout; padding is masked out; eager attention, as sdpa with the padding is refused)."""
    import torch
    import torch._dynamo
    from torch._dynamo.utils import counters

    rows = formatted_rows(tok, 12)
    path = tmp_path / "train.jsonl"
    write_jsonl(path, rows)
    run = {**CFG, "max_steps": 4, "batch_size": 3, "lora_dropout": 0.0, "save_steps": 100}
    M = 16
    (eager, eager_hook), (graphs, graphs_hook), marks = compile_recorder(), compile_recorder(), []
    train(run, tiny_model_cfg, path, tmp_path / "eager", tmp_path / "me", callbacks=[eager], trainer_hook=eager_hook)
    torch._dynamo.reset()
    counters.clear()
    mark = torch.compiler.cudagraph_mark_step_begin
    torch.compiler.cudagraph_mark_step_begin = lambda: (marks.append(1), mark())[1]
    try:
        info = train({**run, "torch_compile": "regional_graphs", "pad_to_multiple_of": M, "attention": "eager"},
                     tiny_model_cfg, path, tmp_path / "graphs", tmp_path / "mg", callbacks=[graphs],
                     trainer_hook=graphs_hook)
    finally:
        torch.compiler.cudagraph_mark_step_begin = mark
    assert len(set(eager.lengths)) >= 3, eager.lengths                  # unpadded: other lengths each step
    assert all(n % M == 0 for n in graphs.lengths), graphs.lengths
    assert [-(-n // M) * M for n in eager.lengths] == graphs.lengths    # each batch rounded up, no more
    assert len(set(graphs.lengths)) < len(graphs.lengths), graphs.lengths   # some padded length comes again
    plugin = graphs.seen["plugin"]
    assert plugin.mode == "reduce-overhead" and plugin.use_regional_compilation and plugin.dynamic is False
    assert "MarkGraphSteps" in graphs.seen["callbacks"] and len(marks) == 4
    assert graphs.graphs[0] > 0 and graphs.graphs == sorted(graphs.graphs), graphs.graphs
    for i in range(1, 4):         # static shapes: a new padded length compiles, one seen before does not
        new = graphs.lengths[i] not in graphs.lengths[:i]
        assert (graphs.graphs[i] > graphs.graphs[i - 1]) == new, (graphs.lengths, graphs.graphs)
    assert graphs.losses == pytest.approx(eager.losses, rel=1e-4)
    assert info["run_config"]["pad_to_multiple_of"] == M and "cudagraph_skips" not in info   # CPU: none recorded
    # padding and the compile mode do not change the optimisation: the resume hash of the eager run with
    # the same attention (the attention implementation is part of the hash)
    eager_info = json.loads((tmp_path / "eager" / "adapter" / "training_info.json").read_text())
    same = {**eager_info["run_config"], "attention": "eager"}
    assert info["config_hash"] == config_hash(same, tiny_model_cfg, sha256_file(path))
    assert info["config_hash"] == config_hash({**same, "torch_compile": False, "pad_to_multiple_of": None},
                                              tiny_model_cfg, sha256_file(path))


@pytest.mark.parametrize("over, message", [
    ({"padding_free": True, "pad_to_multiple_of": 64}, "needs train.padding_free: false and train.pad_to_multiple_of"),
    ({}, "needs train.padding_free: false and train.pad_to_multiple_of"),
    ({"pad_to_multiple_of": 0}, "train.pad_to_multiple_of must be a positive integer or null"),
    ({"pad_to_multiple_of": 64, "attention": "eager", "use_liger_kernel": True},
     "'regional_graphs' and train.use_liger_kernel cannot"),
    ({"pad_to_multiple_of": 64}, "pad_to_multiple_of with train.attention 'sdpa' gave NaN gradients"),
])
def test_regional_graphs_settings_are_checked_before_the_model_loads(over, message, tiny_model_cfg, data, tmp_path,
                                                                     monkeypatch):
    forbid_model_load(monkeypatch, "the model was loaded before train.torch_compile was checked")
    with pytest.raises(UserError, match=message):
        train({**CFG, "torch_compile": "regional_graphs", **over}, tiny_model_cfg, data, tmp_path / "m", tmp_path / "x")
    assert not (tmp_path / "m").exists() and not (tmp_path / "x").exists()


def test_regional_compile_is_checked_before_the_model_loads(tiny_model_cfg, data, tmp_path, monkeypatch):
    """regional + liger (dynamo cannot trace liger's RMSNorm on the card) and an accelerate without
    regional compilation are one-line errors before anything loads or is written."""
    import accelerate.utils

    forbid_model_load(monkeypatch, "the model was loaded before train.torch_compile was checked")
    with pytest.raises(UserError, match="torch_compile 'regional' and train.use_liger_kernel cannot be combined"):
        train({**CFG, "torch_compile": "regional", "use_liger_kernel": True}, tiny_model_cfg, data,
              tmp_path / "m", tmp_path / "x")

    class OldPlugin:   # an accelerate before regional compilation (no such dataclass field)
        __dataclass_fields__ = {"backend": None, "mode": None}

    monkeypatch.setattr(accelerate.utils, "TorchDynamoPlugin", OldPlugin)
    with pytest.raises(UserError, match=r"needs accelerate's regional compilation \(accelerate >= 1.6"):
        train({**CFG, "torch_compile": "regional"}, tiny_model_cfg, data, tmp_path / "m", tmp_path / "x")
    assert not (tmp_path / "m").exists() and not (tmp_path / "x").exists()
