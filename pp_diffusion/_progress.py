"""Progress bars for sampler runs.

A run is one jitted ``lax.scan`` over the reverse-diffusion steps, so the bar is fed from inside it:
scanned step functions call :func:`tick` with the step index, which (only while a run is traced
with progress on) adds a ``jax.debug.callback`` to the step. The callback moves the current
``tqdm`` bar, if any, to that step. The index is not batched over chains or particles, so each step
calls back once; callbacks that arrive out of order never move the bar backwards.

The bar appears only for runs longer than :data:`DELAY` seconds (``tqdm``'s ``delay``), and is off
by default under pytest or when the environment sets ``PP_DIFFUSION_PROGRESS=0``.
"""

from __future__ import annotations

import contextlib
import os

import jax

__all__ = ["tick", "default_enabled", "tracing", "bar"]

DELAY = 2.0  # seconds before a bar shows: short runs stay silent

_tracing = False  # set while a run is being traced with progress on
_bar = None  # the tqdm bar of the run in progress


def default_enabled() -> bool:
    """On unless running under pytest or ``PP_DIFFUSION_PROGRESS=0``."""
    if os.environ.get("PP_DIFFUSION_PROGRESS", "").strip().lower() in {"0", "false", "no", "off"}:
        return False
    return "PYTEST_CURRENT_TEST" not in os.environ


def tick(index) -> None:
    """Report from inside a traced step that step ``index`` (0-based, unbatched) is done."""
    if _tracing:
        jax.debug.callback(_advance, index)


def _advance(index) -> None:
    current = _bar
    if current is not None:
        done = int(index) + 1
        if done > current.n:
            current.update(done - current.n)


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
    """A ``tqdm`` bar of ``total`` steps fed by :func:`tick` (nothing when not ``enabled``)."""
    global _bar
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    previous = _bar
    _bar = tqdm(total=total, desc=desc, unit="step", delay=DELAY, leave=False)
    try:
        yield _bar
    finally:
        _bar.close()
        _bar = previous
