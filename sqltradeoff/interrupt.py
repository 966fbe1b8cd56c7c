"""Stop a training run promptly on Ctrl-C (SIGINT) or SIGTERM, between checkpoints' writes.

Why this is needed: Python runs a signal handler only when the main thread executes Python
bytecode. On a CPU, `loss.backward()` is one C++ call that computes the whole backward pass (on
the calling thread, with the GIL released): a 0.5B-model step of 4 x 512 tokens spends tens of
seconds in it, and Ctrl-C waited that long (minutes with grad_accum 4 on shared cores).

What `interruptible(model)` does while its block runs:
* SIGINT/SIGTERM handlers that only set a flag (a second signal raises at once);
* on CPU, a forward pre-hook on every module and a gradient hook on every trainable parameter
  (the LoRA weights of each layer), which raise `TrainingInterrupted` when the flag is set. The
  autograd engine calls the gradient hooks in Python layer by layer, so the handler runs and the
  backward pass stops within one layer's work (measured: 0.1 s after the signal, against 12.7 s
  for an uninterrupted backward call). The hooks return None: gradients and weights are unchanged;
* on every device, a `TrainerCallback` (`callback()`) that raises at the end of a micro-batch or
  step (on a GPU the kernels are asynchronous and Python regains control quickly).

Checkpoints are written outside forward/backward, so a signal never cuts one short: the run
stops at the next forward/backward, keeping every checkpoint written so far. The previous signal
handlers and the hooks are restored/removed when the block ends.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class Interrupted(KeyboardInterrupt):
    """Stopped by the signal `signum` (a KeyboardInterrupt, so `finally` blocks and cleanups run)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum     # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class TrainingInterrupted(Interrupted):
    """Training stopped by a signal; `step`: the last optimizer step done; `checkpoint`: the newest
    complete checkpoint (None if there is none)."""

    def __init__(self, signum: int, step: int | None = None, checkpoint: str | None = None):
        super().__init__(signum)
        self.step, self.checkpoint = step, checkpoint


@contextmanager
def signals_raise(signals: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[None]:
    """Within the block, `signals` raise `Interrupted` where the program is (as SIGINT raises
    KeyboardInterrupt), so that `finally` blocks remove temporary files; by default a SIGTERM would
    end the process at once, leaving them behind. Does nothing outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class _Stop:
    def __init__(self):
        self.signum: int | None = None

    def handler(self, signum, frame):
        if self.signum is not None:          # a second signal: stop now, wherever we are
            raise TrainingInterrupted(signum)
        self.signum = signum

    def check(self, *args, **kwargs):
        if self.signum is not None:
            raise TrainingInterrupted(self.signum)


def _callback(stop: _Stop):
    from transformers import TrainerCallback

    class StopOnSignal(TrainerCallback):
        def on_substep_end(self, args, state, control, **kwargs):
            stop.check()

        def on_step_end(self, args, state, control, **kwargs):
            stop.check()

    return StopOnSignal()


class Interruptible:
    """Handle of an `interruptible` block: `callback` goes into the trainer's callbacks."""

    def __init__(self, stop: _Stop):
        self._stop = stop
        self.callback = _callback(stop)

    @property
    def signum(self) -> int | None:
        return self._stop.signum


@contextmanager
def interruptible(model, hooks: bool = True,
                  signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[Interruptible]:
    """Within the block, `signals` stop training at the next forward/backward work (see the module
    docstring). `hooks`: add the module/gradient hooks (needed on CPU; cheap, but on a GPU the
    callback alone suffices). Outside the main thread no handler can be set: the block does nothing."""
    stop = _Stop()
    handle = Interruptible(stop)
    if threading.current_thread() is not threading.main_thread():
        yield handle
        return
    previous = {s: signal.signal(s, stop.handler) for s in signals}
    removables = []
    try:
        if hooks:
            removables += [m.register_forward_pre_hook(stop.check) for m in model.modules()]
            removables += [p.register_hook(stop.check) for p in model.parameters() if p.requires_grad]
        yield handle
    finally:
        for r in removables:
            r.remove()
        for s, h in previous.items():
            signal.signal(s, h)
