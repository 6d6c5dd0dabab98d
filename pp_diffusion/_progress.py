"""Progress bars for sampler runs.

A run is one jitted ``lax.scan`` over the reverse-diffusion steps, so the bar is fed from inside it:
scanned step functions call :func:`tick` with the step index, which (only while a run is traced
with progress on) adds a ``jax.debug.callback`` to the step, taken on every ``k``-th step only (a
``lax.switch`` on the step), so that a run calls back at most :data:`MAX_CALLBACKS` times whatever
its length: a callback costs 0.1-0.5 ms of host round trip, one per step cost a quarter of a short
run, and five per run cost 1.002x (range 0.95-1.03 over 7 repeats) on the README's 2-D mixture
(``benchmarks/progress_overhead.py``). The index is not batched over chains or particles, so each
such step calls back once; callbacks that arrive out of order never move the bar backwards. With
progress off nothing is compiled in.

The bar starts at the first callback, when compilation is over, so its rate and ETA are those of
the run. On a terminal (or in Jupyter) it is a ``tqdm`` bar that appears only for runs longer than
:data:`DELAY` seconds; otherwise (output redirected to a file or a pipe) a run longer than that
writes a plain line to ``stderr`` at each callback past that delay (at most one per fifth of
its steps). Progress is off by default under
pytest or when the environment sets ``PP_DIFFUSION_PROGRESS=0``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time

import jax
import jax.numpy as jnp

__all__ = ["tick", "default_enabled", "tracing", "bar"]

DELAY = 2.0  # seconds before a bar shows: short runs stay silent
MAX_CALLBACKS = 5  # host callbacks per run at most (the bar moves every ceil(steps / 5) steps)

_tracing = False  # set while a run is being traced with progress on
_run = None  # the _Run in progress


def default_enabled() -> bool:
    """On unless running under pytest or ``PP_DIFFUSION_PROGRESS=0``."""
    if os.environ.get("PP_DIFFUSION_PROGRESS", "").strip().lower() in {"0", "false", "no", "off"}:
        return False
    return "PYTEST_CURRENT_TEST" not in os.environ


def _interactive() -> bool:
    """Whether ``stderr`` redraws a line in place: a terminal, or a Jupyter kernel's output."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


def tick(index) -> None:
    """Report from inside a traced step that step ``index`` (0-based, unbatched) is done.

    Only every ``ceil(steps / MAX_CALLBACKS)``-th step (and the last) calls back to the host, with
    its step count fixed in the compiled branch (no operand to copy back); the number of steps is
    the one of the :func:`bar` open while the run is traced.
    """
    if not _tracing:
        return
    if _run is None:  # no bar to size the stride: every step reports
        jax.debug.callback(_advance, index)
        return
    total = _run.total
    every = -(-total // MAX_CALLBACKS)
    marks = [min(k * every, total) for k in range(1, -(-total // every) + 1)]  # steps done when reporting
    done = index + 1
    branch = jnp.where(done >= total, len(marks), jnp.where(done % every == 0, done // every, 0))
    jax.lax.switch(branch, [lambda: None] + [
        lambda m=m: jax.debug.callback(functools.partial(_advance, m - 1)) for m in marks
    ])


def _advance(index) -> None:
    current = _run
    if current is not None:
        current.advance(int(index) + 1)


class _Run:
    """The progress of one run: ``total`` steps, shown once the first step reports."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc = int(total), desc
        self.done = 0
        self.start = None  # time of the first callback (compilation over)
        self.first = 0  # steps done at that time
        self.bar = None  # the tqdm bar, on a terminal
        self.lock = threading.Lock()

    def advance(self, done: int) -> None:
        with self.lock:
            if done <= self.done:
                return
            now = time.perf_counter()
            if self.start is None:
                self.start, self.first = now, done
                if _interactive():
                    from tqdm.auto import tqdm

                    self.bar = tqdm(total=self.total, initial=done, desc=self.desc, unit="step",
                                    delay=DELAY, leave=False)
                self.done = done
                return
            if self.bar is not None:
                self.bar.update(done - self.done)
            self.done = done
            if self.bar is None:
                self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self.start
        if elapsed < DELAY:
            return
        left = ""
        if self.done < self.total:
            rate = (self.done - self.first) / elapsed
            left = f", about {(self.total - self.done) / rate:.0f} s left"
        print(f"{self.desc}: step {self.done}/{self.total} ({100 * self.done // self.total}%) "
              f"after {elapsed:.1f} s{left}", file=sys.stderr, flush=True)

    def close(self) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.close()


@contextlib.contextmanager
def tracing(enabled: bool):
    """While active, :func:`tick` adds its callback to the functions being traced."""
    global _tracing
    previous, _tracing = _tracing, bool(enabled)
    try:
        yield
    finally:
        _tracing = previous


@contextlib.contextmanager
def bar(total: int, desc: str, enabled: bool):
    """The progress of a run of ``total`` steps fed by :func:`tick` (nothing when not ``enabled``)."""
    global _run
    if not enabled:
        yield None
        return
    previous = _run
    _run = _Run(total, desc)
    try:
        yield _run
    finally:
        try:
            jax.effects_barrier()  # the last callbacks land before the bar closes
        finally:
            _run.close()
            _run = previous
