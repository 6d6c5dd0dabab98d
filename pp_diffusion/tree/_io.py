"""Saving and loading search trees: one ``.npz`` of plain arrays (read with ``allow_pickle=False``) and a
JSON header inside it holding the format version, the arrays' shapes and dtypes and the SHA-256 of
their bytes, checked on every load. Whether a tree belongs to a search is its ``signature``, checked
when it is grown (:meth:`~pp_diffusion.tree.TreeKernel.grow`)."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import jax
import numpy as np

from pp_diffusion.integrators._base import IntegratorState
from pp_diffusion.tree._tree import Tree

__all__ = ["save", "load", "TreeFileError"]

FORMAT_VERSION = 2
_HEADER = "header"


class TreeFileError(ValueError):
    """A tree file that is corrupted, truncated or not a tree."""


def _arrays(tree: Tree) -> dict[str, np.ndarray]:
    out = {f"state.{name}": np.asarray(value) for name, value in tree.state._asdict().items()}
    out.update({name: np.asarray(getattr(tree, name)) for name in Tree._fields if name != "state"})
    return out


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(tree: Tree, path, *, overwrite: bool = False) -> Path:
    """Write ``tree`` (one tree: not a batch of chains) to ``path`` (``.npz``)."""
    if not isinstance(tree, Tree):
        raise TypeError(f"tree must be a pp_diffusion.tree.Tree, got {type(tree).__name__}")
    if np.ndim(tree.num_nodes) != 0:
        raise ValueError(f"save takes one tree; this one has a leading batch axis of {np.shape(tree.num_nodes)}")
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"path must end in .npz, got {str(path)!r}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    arrays = _arrays(tree)
    header = {"format_version": FORMAT_VERSION, "kind": "pp_diffusion search tree", "sha256": _digest(arrays),
              "arrays": {k: [list(v.shape), str(v.dtype)] for k, v in arrays.items()}}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays, **{_HEADER: np.frombuffer(json.dumps(header).encode(), np.uint8)})
    os.replace(tmp, path)
    return path


def load(path) -> Tree:
    """The tree saved at ``path``; a :class:`TreeFileError` if the file is not a complete, unaltered tree."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tree file at {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            if _HEADER not in f.files:
                raise TreeFileError(f"{path} is not a pp_diffusion tree file (no header)")
            header = json.loads(bytes(f[_HEADER]).decode())
            arrays = {k: f[k] for k in f.files if k != _HEADER}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, UnicodeDecodeError) as err:
        if isinstance(err, TreeFileError):
            raise
        raise TreeFileError(f"{path} is corrupted or truncated: {err}") from err
    if header.get("format_version") != FORMAT_VERSION:
        raise TreeFileError(f"{path}: tree format version {header.get('format_version')!r}, this version reads "
                            f"{FORMAT_VERSION}")
    expected = {k: (tuple(s), d) for k, (s, d) in header["arrays"].items()}
    found = {k: (v.shape, str(v.dtype)) for k, v in arrays.items()}
    if expected != found:
        raise TreeFileError(f"{path}: its arrays {sorted(found)} do not match its header {sorted(expected)}")
    if _digest(arrays) != header["sha256"]:
        raise TreeFileError(f"{path}: checksum mismatch (expected SHA-256 {header['sha256']}): the file was altered")
    state = IntegratorState(**{name: jax.numpy.asarray(arrays[f"state.{name}"]) for name in IntegratorState._fields})
    return Tree(state=state, **{name: jax.numpy.asarray(arrays[name]) for name in Tree._fields if name != "state"})
