"""Killable, memory-capped worker processes for untrusted SQL (the hard time limit).

SQLite's progress handler (`sqlexec.execute_sql`) interrupts a query between VM steps, but
not inside one long step: a LIKE/GLOB/instr scan of a long string, a huge printf, a long
compile. `run_isolated` runs the work in forked worker processes and watches, from the
parent, a clock in shared memory that `execute_sql` sets at the start of every query:

* a worker whose query has run `timeout_s + sqlexec.HARD_KILL_SLACK_S` (0.5 s) is killed
  (SIGKILL) and its item reported as a timeout; so every query ends within its limit plus
  0.5 s plus the kill-and-reap latency (milliseconds; measured overruns in
  tests/test_hostile_sql.py: 0.5-0.6 s over the limit);
* each worker is capped at `memory_mb` MiB beyond its size at start (`RLIMIT_AS`) and SQLite's
  heap at half of that (`PRAGMA hard_heap_limit`), so a result too big for memory is an
  `out of memory` error, not an OOM-killed machine;
* a worker that dies (killed from outside, by the OOM killer, a crash) has its current item
  reported as an error; a fresh worker takes the rest of its batch, and every item is
  reported exactly once.
"""
from __future__ import annotations

import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import sqlite3
import time
from collections import deque
from typing import Any, Callable, Hashable, Iterable, Iterator, Sequence

from . import sqlexec
from .sqlexec import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, HARD_KILL_SLACK_S, OTHER_ERROR, TIMEOUT, check_timeout


def _cap_memory(memory_mb: int | None) -> None:
    """In a worker: allow `memory_mb` MiB of address space beyond the current size."""
    if not memory_mb:
        return
    budget = int(memory_mb) * 1024 * 1024
    try:
        import resource
        with open("/proc/self/statm") as fh:
            size = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = size + budget if hard == resource.RLIM_INFINITY else min(size + budget, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, OSError, ValueError):     # not Linux: the time limit still holds
        pass
    try:      # SQLite's own heap stops first, with a clean SQLITE_NOMEM
        mem = sqlite3.connect(":memory:")
        mem.execute(f"PRAGMA hard_heap_limit = {budget // 2}")
        mem.close()
    except sqlite3.Error:
        pass


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when its parent dies (a SIGTERM'd stage leaves no orphan)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:        # the parent died before prctl took effect
        os._exit(1)


FLUSH_S = 0.05      # a worker sends its finished results at least this often (and per batch)


def _worker_main(conn, clock, fn: Callable, memory_mb: int | None) -> None:
    """A worker: receive batches of (key, item); send lists of (key, True, fn(item)) or
    (key, False, why), in order, at the end of each batch and every FLUSH_S seconds.
    `clock[3]` counts the items of the current batch finished so far."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the parent handles Ctrl-C and kills us
    _die_with_parent()
    sqlexec.forget_inherited()
    sqlexec._CLOCK = clock
    _cap_memory(memory_mb)
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            return
        if batch is None:
            return
        clock[3] = 0.0
        done: list = []
        last_flush = time.monotonic()
        for key, item in batch:
            clock[2] = time.monotonic()
            try:
                done.append((key, True, fn(item)))
            except MemoryError:
                done.append((key, False, "out of memory"))
            except Exception as exc:   # noqa: BLE001 - reported as this item's error
                done.append((key, False, f"{type(exc).__name__}: {exc}"[:300]))
            clock[2] = 0.0
            clock[3] += 1
            if time.monotonic() - last_flush >= FLUSH_S:
                conn.send(done)
                done, last_flush = [], time.monotonic()
        conn.send(done)


class _Worker:
    def __init__(self, ctx, fn: Callable, memory_mb: int | None) -> None:
        self.clock = ctx.RawArray("d", 4)
        self.received = 0                       # results received of the current batch
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, self.clock, fn, memory_mb),
                                daemon=True)
        self.proc.start()
        child.close()
        self.pending: deque = deque()          # (key, item) sent and not yet answered, in order

    def send(self, batch: list) -> None:
        self.pending.extend(batch)
        self.received = 0
        try:
            self.conn.send(batch)
        except OSError:       # it just died: the next wait sees the closed pipe
            pass

    def deadline(self, timeout_s: float, item_timeout_s: float) -> float:
        """When this worker must be killed, judged by its clock now (inf: not running anything)."""
        q, it = self.clock[0], self.clock[2]
        return min(q + timeout_s + HARD_KILL_SLACK_S if q > 0 else math.inf,
                   it + item_timeout_s + HARD_KILL_SLACK_S if it > 0 else math.inf)

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(1)
        self.kill()


def _death_reason(proc) -> str:
    code = proc.exitcode
    if code is not None and code < 0:
        try:
            return f"worker process killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"worker process died (exit code {code})"


FailFn = Callable[[Any, str, int, str], Any]    # (item, kind, tag, message) -> result


def run_isolated(batches: Iterable[Sequence[tuple[Hashable, Any]]], fn: Callable[[Any], Any],
                 on_fail: FailFn, *, workers: int = 1, timeout_s: float = DEFAULT_TIMEOUT_S,
                 item_timeout_s: float | None = None,
                 memory_mb: int | None = DEFAULT_MEMORY_MB) -> Iterator[tuple[Hashable, Any]]:
    """Yield `(key, fn(item))` for every `(key, item)` of `batches`, computed in killable workers.

    `workers` forked processes take one batch at a time. A worker whose current query (started
    by `execute_sql`) has run `timeout_s + HARD_KILL_SLACK_S`, or whose current item has run
    `item_timeout_s + HARD_KILL_SLACK_S` (default: 3 x timeout_s), is killed; its item gives
    `on_fail(item, TIMEOUT, tag, message)` (`tag`: the query's `tag`, 0 when not in a query).
    A worker that dies (killed from outside, out of memory) gives `on_fail(item, OTHER_ERROR,
    tag, message)`, as does an exception raised by `fn`; a fresh worker takes the rest of the
    batch. Every item is yielded exactly once (in completion order).
    """
    timeout_s = check_timeout(timeout_s)
    item_timeout_s = 3 * timeout_s if item_timeout_s is None else check_timeout(item_timeout_s)
    ctx = multiprocessing.get_context("fork")
    queue = deque(list(b) for b in batches if b)
    pool: list[_Worker] = []
    try:
        while queue or any(w.pending for w in pool):
            while len(pool) < workers and queue:
                pool.append(_Worker(ctx, fn, memory_mb))
            for i, w in enumerate(pool):
                if not w.pending and queue:
                    if not w.proc.is_alive():        # died between two batches
                        w.kill()
                        pool[i] = w = _Worker(ctx, fn, memory_mb)
                    w.send(queue.popleft())
            busy = [w for w in pool if w.pending]
            now = time.monotonic()
            wake = min(w.deadline(timeout_s, item_timeout_s) for w in busy)
            ready = multiprocessing.connection.wait([w.conn for w in busy],
                                                    timeout=min(max(0.0, wake - now), 1.0))
            for i, w in enumerate(pool):
                if not w.pending:
                    continue
                dead = False
                try:
                    while w.pending and w.conn.poll():
                        for key, ok, value in w.conn.recv():
                            item = w.pending.popleft()[1]
                            w.received += 1
                            yield key, (value if ok else on_fail(item, OTHER_ERROR, 0, value))
                except (EOFError, OSError):
                    dead = True
                if not w.pending:
                    continue
                if dead or not w.proc.is_alive():
                    tag, why, kind = int(w.clock[1]) if w.clock[0] > 0 else 0, None, OTHER_ERROR
                elif time.monotonic() >= w.deadline(timeout_s, item_timeout_s):
                    in_query = w.clock[0] > 0
                    tag, kind = (int(w.clock[1]) if in_query else 0), TIMEOUT
                    why = (f"exceeded {timeout_s:g} s (worker killed)" if in_query
                           else f"item exceeded {item_timeout_s:g} s (worker killed)")
                else:
                    continue
                w.kill()
                why = why or _death_reason(w.proc)
                # finished but not yet sent: run again; the one it was on: failed
                unsent = min(max(0, int(w.clock[3]) - w.received), len(w.pending) - 1)
                rest = list(w.pending)
                key, item = rest.pop(unsent)
                pool[i] = _Worker(ctx, fn, memory_mb)
                if rest:
                    pool[i].send(rest)
                yield key, on_fail(item, kind, tag, why)
    finally:
        for w in pool:
            w.stop() if not w.pending else w.kill()
