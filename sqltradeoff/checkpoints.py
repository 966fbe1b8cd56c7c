"""Training checkpoints: which one to resume from, and which to remove (training.py uses these).

Checkpoints live in `<out>/checkpoints/checkpoint-<step>` with `config_hash.json` (the hash of
the train config, model and data they belong to). A checkpoint counts only when complete
(`checkpoint_problem`): a kill while transformers writes one leaves it partial, and the run then
resumes from the newest complete one, removing the partial ones with a warning.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from .io import write_json

HASH_FILE = "config_hash.json"

_CHECKPOINT_RE = re.compile(r"checkpoint-(\d+)")


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint directory `path` cannot be resumed from, or None when it is complete.

    A kill while transformers writes a checkpoint leaves some of its files missing or cut short
    (it writes the weights, optimizer, scheduler, RNG state and last `trainer_state.json`, in place).
    Checked: `trainer_state.json` parses and names the directory's step; the adapter weights
    (`adapter_model.safetensors`, or a full `model.safetensors`) open with safetensors, which
    refuses a file shorter than its header says; `optimizer.pt`, `scheduler.pt` and the RNG
    state(s) `rng_state*.pth` are present and whole (torch.save writes zip files, whose directory
    is at the end: a truncated file is not a zip file)."""
    import zipfile

    from safetensors import safe_open

    m = _CHECKPOINT_RE.fullmatch(path.name)
    if m is None or not path.is_dir():
        return "not a checkpoint directory"
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except FileNotFoundError:
        return "trainer_state.json is missing"
    except (OSError, ValueError) as exc:
        return f"trainer_state.json is unreadable ({exc})"
    if not isinstance(state, dict) or state.get("global_step") != int(m.group(1)):
        return "trainer_state.json does not record this checkpoint's step"
    weights = [path / n for n in ("adapter_model.safetensors", "model.safetensors") if (path / n).is_file()]
    if not weights:
        return "adapter_model.safetensors is missing"
    try:
        with safe_open(str(weights[0]), framework="pt"):
            pass
    except Exception as exc:   # safetensors raises its own error type (and OSError)
        return f"{weights[0].name} is incomplete or corrupt ({exc})"
    rng = sorted(path.glob("rng_state*.pth"))
    for f in [path / "optimizer.pt", path / "scheduler.pt", *(rng or [path / "rng_state.pth"])]:
        if not f.is_file():
            return f"{f.name} is missing"
        if not zipfile.is_zipfile(f):
            return f"{f.name} is incomplete or corrupt"
    return None


def checkpoints(ckpt_dir: Path) -> list[Path]:
    """The `checkpoint-<step>` directories in `ckpt_dir`, newest (highest step) first."""
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.iterdir() if p.is_dir() and _CHECKPOINT_RE.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]), reverse=True)


def latest_checkpoint(ckpt_dir: Path, remove_incomplete: bool = False) -> Path | None:
    """The newest complete checkpoint in `ckpt_dir` (see `checkpoint_problem`), or None.

    Incomplete ones are skipped with a warning, and removed when `remove_incomplete` (they would
    otherwise count towards `save_total_limit` and confuse the next resume)."""
    for p in checkpoints(ckpt_dir):
        problem = checkpoint_problem(p)
        if problem is None:
            return p
        if remove_incomplete:
            print(f"warning: removing incomplete checkpoint {p}: {problem}", file=sys.stderr)
            shutil.rmtree(p)
        else:
            print(f"warning: skipping incomplete checkpoint {p}: {problem}", file=sys.stderr)
    return None


def _prepare_checkpoints(ckpt_dir: Path, digest: str, max_steps: int = -1) -> Path | None:
    """The checkpoint to resume from (same config hash), or None; stale checkpoints are removed.

    A checkpoint at `max_steps` or beyond (the run had finished training but not written its
    adapter) is removed too: transformers resumes from it with one extra optimizer step when it
    falls inside an epoch, so the run goes on from the checkpoint before it."""
    hash_file = ckpt_dir / HASH_FILE
    if ckpt_dir.is_dir():
        stored = None
        if hash_file.is_file():
            try:
                stored = json.loads(hash_file.read_text()).get("config_hash")
            except (OSError, ValueError):
                stored = None
        if stored == digest:
            while ((last := latest_checkpoint(ckpt_dir, remove_incomplete=True)) is not None
                   and 0 < max_steps <= int(last.name.split("-")[1])):
                print(f"removing {last}: it is the end of the run, not a point to resume from", file=sys.stderr)
                shutil.rmtree(last)
            return last
        if any(ckpt_dir.iterdir()):
            print(f"removing checkpoints in {ckpt_dir}: they belong to a different training configuration",
                  file=sys.stderr)
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    write_json(hash_file, {"config_hash": digest})
    return None
