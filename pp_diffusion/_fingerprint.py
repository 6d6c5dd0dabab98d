"""Fingerprints of what a compiled run depends on, for :func:`pp_diffusion.infer`'s compilation cache.

``jax.jit`` bakes every value a function closes over into the compiled code, so a cache keyed on the
program's identity returns stale answers when the program reads a global the user has rebound, and a
cache keyed on the sampler's identity recompiles for every new but equal ``smc.twisted(1000)``.
Instead the key is a digest of values:

- a sampler: its name and settings, and its ``setup`` / ``run`` functions by :func:`of_value`;
- a program, two ways: :func:`of_value` of the function itself (its code, closure cells, defaults
  and the globals its code names, recursively), and the program's trace at a fixed random x_0 with
  its observed arguments zeroed (every site's name, distribution type and parameters, value,
  mask, scale, infer hints). A value that changes what the program computes changes one or the
  other; one that changes neither (an attribute of a plain Python object mutated in place, which
  the program reads only through a branch the probe x_0 does not take) is not seen.
"""

from __future__ import annotations

import hashlib
import types
from typing import Any

import jax
import numpy as np
from numpyro import handlers

__all__ = ["of_value", "of_program"]

_MAX_DEPTH = 12


class _Digest:
    def __init__(self):
        self.hash = hashlib.sha1()
        self.refs: list = []  # objects digested by identity: kept alive so their ids stay theirs
        self.seen: dict[int, int] = {}  # id -> the order in which the value was first met

    def add(self, *parts):
        for part in parts:
            self.hash.update(repr(part).encode())
            self.hash.update(b"\x00")

    def array(self, arr):
        arr = np.asarray(arr)
        self.add("array", arr.shape, str(arr.dtype))
        self.hash.update(np.ascontiguousarray(arr).tobytes())

    def identity(self, obj):
        self.refs.append(obj)
        self.add("id", type(obj).__qualname__, id(obj))


def _visit(obj, digest: _Digest, depth: int) -> None:
    if depth > _MAX_DEPTH:
        digest.identity(obj)
        return
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        digest.add(type(obj).__name__, obj)
        return
    if isinstance(obj, (np.ndarray, np.generic)):
        if obj.dtype == object:
            digest.identity(obj)
        else:
            digest.array(obj)
        return
    if isinstance(obj, jax.Array):
        if isinstance(obj, jax.core.Tracer):
            digest.identity(obj)
        elif jax.dtypes.issubdtype(obj.dtype, jax.dtypes.prng_key):
            digest.array(jax.random.key_data(obj))
        else:
            digest.array(obj)
        return
    if isinstance(obj, types.ModuleType):
        digest.add("module", obj.__name__)
        return
    if id(obj) in digest.seen:  # a cycle, or a value met before: its digest is already in
        digest.add("seen", digest.seen[id(obj)])  # by order of first meeting, which equal values share
        return
    digest.seen[id(obj)] = len(digest.seen)
    digest.refs.append(obj)
    if isinstance(obj, (tuple, list)):
        digest.add(type(obj).__qualname__, len(obj))
        for item in obj:
            _visit(item, digest, depth + 1)
        return
    if isinstance(obj, dict):
        digest.add("dict", len(obj))
        for key in sorted(obj, key=repr):
            digest.add(repr(key))
            _visit(obj[key], digest, depth + 1)
        return
    if isinstance(obj, types.FunctionType):
        _visit_function(obj, digest, depth)
        return
    if isinstance(obj, types.MethodType):
        digest.add("method", obj.__func__.__qualname__)
        _visit(obj.__func__, digest, depth + 1)
        _visit(obj.__self__, digest, depth + 1)
        return
    if hasattr(obj, "func") and hasattr(obj, "args") and hasattr(obj, "keywords"):  # functools.partial
        digest.add("partial")
        _visit((obj.func, obj.args, obj.keywords), digest, depth + 1)
        return
    if isinstance(obj, (types.BuiltinFunctionType, type)):
        digest.add("named", getattr(obj, "__module__", None), getattr(obj, "__qualname__", repr(obj)))
        return
    leaves, treedef = jax.tree_util.tree_flatten(obj)
    if len(leaves) != 1 or leaves[0] is not obj:  # a registered pytree (Equinox module, distribution, ...)
        digest.add("pytree", str(treedef))
        for leaf in leaves:
            _visit(leaf, digest, depth + 1)
        return
    digest.identity(obj)


def _visit_function(fn, digest: _Digest, depth: int) -> None:
    code = fn.__code__
    digest.add("function", fn.__module__, fn.__qualname__)
    digest.identity(code)
    for cell in fn.__closure__ or ():
        try:
            contents = cell.cell_contents
        except ValueError:  # an empty cell
            digest.add("empty cell")
            continue
        _visit(contents, digest, depth + 1)
    _visit(fn.__defaults__, digest, depth + 1)
    _visit(fn.__kwdefaults__, digest, depth + 1)
    for name in _global_names(code):
        if name in fn.__globals__:
            digest.add("global", name)
            _visit(fn.__globals__[name], digest, depth + 1)


def _global_names(code) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:  # nested functions and comprehensions read globals too
        if isinstance(const, types.CodeType):
            names += _global_names(const)
    return sorted(set(names))


def of_value(obj) -> tuple[str, list]:
    """``(hex digest, kept references)`` of any value: numbers and strings by value, arrays by content,
    containers, pytrees and functions (code, closure, defaults, the globals they name) recursively, and
    everything else by identity (the references keep those objects alive)."""
    digest = _Digest()
    _visit(obj, digest, 0)
    return digest.hash.hexdigest(), digest.refs


def of_program(program, info, data: dict[str, Any]) -> tuple[str, list]:
    """The fingerprint of a program and its data (see the module docstring); observed arguments
    (``info.observed_args``) count by shape and dtype only."""
    digest = _Digest()
    _visit(program, digest, 0)
    probe_data = {k: (np.zeros(np.shape(v), np.asarray(v).dtype) if k in info.observed_args else v)
                  for k, v in data.items()}
    x0 = np.random.default_rng(20261202).normal(size=info.prior.event_shape).astype(np.float32)
    with jax.ensure_compile_time_eval():
        traced = handlers.substitute(handlers.seed(program, jax.random.key(0)), data={info.site: x0})
        trace = handlers.trace(traced).get_trace(**probe_data)
    for name, site in trace.items():
        digest.add("site", name, site["type"], site.get("is_observed"))
        _visit((site.get("fn"), site.get("value"), site.get("scale"), site.get("infer"), site.get("args"),
                site.get("kwargs")), digest, 1)
    for key in sorted(data):
        digest.add("arg", key)
        value = data[key]
        if key in info.observed_args:
            digest.add(np.shape(value), str(np.asarray(value).dtype))
        else:
            _visit(value, digest, 1)
    return digest.hash.hexdigest(), digest.refs
