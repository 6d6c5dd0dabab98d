"""Saving and loading diffusion models: one checkpoint format for the zoo and for users' own models.

A saved model is a folder with two files:

- ``weights.eqx``: the network's array leaves written by :func:`equinox.tree_serialise_leaves`
  (a sequence of ``.npy`` records, read back with ``allow_pickle=False``: no pickle anywhere);
- ``model.json``: the card. It holds the format version, the network (its class and, for the
  networks of :mod:`pp_diffusion.networks`, its constructor arguments; the shape, dtype and tree
  path of every saved leaf), the parameterization, the schedule and its fields, the event shape,
  ``data_var``, ``data_range``, ``t_start``, the SHA-256 of ``weights.eqx`` (checked on every
  load) and any metadata the user passed.

Every check that needs no weights (the path, the card, the format version, the network and its
leaf shapes, the schedule) runs before the weights are hashed and read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from pp_diffusion import networks, schedules
from pp_diffusion.model import DiffusionModel

__all__ = ["save_model", "load_model", "load_card", "ChecksumError", "FORMAT_VERSION", "sha256", "build_network"]

FORMAT_VERSION = 1
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.eqx"
WEIGHTS_FORMAT = "equinox.tree_serialise_leaves (numpy .npy records, no pickle)"

NETWORKS = {"UNet": networks.UNet, "EnergyUNet": networks.EnergyUNet, "ResidualMLP": networks.ResidualMLP, "Classifier": networks.Classifier}
_FUNCTION = "FunctionNetwork"
SCHEDULES = {
    "VPCosine": schedules.VPCosine,
    "VPLinear": schedules.VPLinear,
    "VE": schedules.VE,
    "EDM": schedules.EDM,
    "RectifiedFlow": schedules.RectifiedFlow,
    "DiscreteVP": schedules.DiscreteVP._from_log_alphas,  # {"class": "DiscreteVP", "log_alphas": [...]}
    "ddpm_linear": schedules.ddpm_linear,
}
# what save_model writes itself; a user's card may not use these keys
_RESERVED = ("format_version", "kind", "name", "network", "num_parameters", "parameterization", "schedule",
             "event_shape", "data_var", "data_range", "t_start", "weights", "weights_format", "sha256", "leaves",
             "networks")
_REQUIRED = ("network", "parameterization", "schedule", "event_shape", "weights", "sha256")


class ChecksumError(ValueError):
    """A weights file does not match the SHA-256 recorded in its ``model.json``."""


def sha256(path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- networks


def build_network(spec: dict, key=None):
    """An untrained network of the class and hyper-parameters in ``spec`` (``{"class": ..., "config": {...}}``,
    one of the classes of :mod:`pp_diffusion.networks`), initialised from ``key`` (default ``jax.random.key(0)``)."""
    kind = spec["class"]
    if kind not in NETWORKS:
        raise ValueError(f"unknown network class {kind!r} in a model.json; known: {sorted(NETWORKS)}")
    return NETWORKS[kind](**spec["config"], key=jax.random.key(0) if key is None else key)


def _describe(tree):
    """A JSON description of a pytree of dicts (string keys), lists, tuples, None and arrays, or
    None when the tree has other nodes (then loading needs a skeleton)."""
    if type(tree) is dict and all(isinstance(k, str) for k in tree):
        parts = {k: _describe(v) for k, v in tree.items()}
        return None if any(v is None for v in parts.values()) else {"dict": parts}
    if type(tree) in (list, tuple):
        parts = [_describe(v) for v in tree]
        return None if any(v is None for v in parts) else {type(tree).__name__: parts}
    if tree is None:
        return {"none": True}
    if isinstance(tree, (jax.Array, jax.ShapeDtypeStruct, np.ndarray)):
        return {"shape": list(tree.shape), "dtype": str(tree.dtype)}
    return None


def _from_description(desc):
    """The shape-only pytree a :func:`_describe` description stands for."""
    if "dict" in desc:
        return {k: _from_description(v) for k, v in desc["dict"].items()}
    if "list" in desc:
        return [_from_description(v) for v in desc["list"]]
    if "tuple" in desc:
        return tuple(_from_description(v) for v in desc["tuple"])
    if "none" in desc:
        return None
    return jax.ShapeDtypeStruct(tuple(desc["shape"]), jax.dtypes.canonicalize_dtype(jnp.dtype(desc["dtype"])))


def _network_spec(network) -> dict:
    cls = type(network)
    if NETWORKS.get(cls.__name__) is cls:
        return {"class": cls.__name__, "config": network.config()}
    if isinstance(network, networks.FunctionNetwork):
        fn = network.apply
        name = f"{getattr(fn, '__module__', None) or '?'}.{getattr(fn, '__qualname__', type(fn).__name__)}"
        return {"class": _FUNCTION, "apply": name, "params": _describe(network.params)}
    return {"class": f"{cls.__module__}.{cls.__qualname__}"}


def _is_saved_leaf(leaf) -> bool:
    # the leaves equinox.default_serialise_filter_spec writes (and ShapeDtypeStruct, a skeleton's array)
    return isinstance(leaf, jax.ShapeDtypeStruct) or eqx.is_array_like(leaf)


def _leaves(tree) -> list[dict]:
    """Path, shape and dtype of each leaf ``tree_serialise_leaves`` writes, in its order."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if _is_saved_leaf(leaf):
            dtype = leaf.dtype if hasattr(leaf, "dtype") else None  # Python scalars: saved as their type
            out.append({"path": jax.tree_util.keystr(path), "shape": list(np.shape(leaf)),
                        "dtype": None if dtype is None else str(dtype)})
    return out


def write_weights(folder, network, filename: str = WEIGHTS_FILE) -> dict:
    """Write ``network``'s leaves to ``folder / filename`` and return its ``model.json`` entry: the
    network's spec, parameter count, file name and format, SHA-256 and leaf records."""
    weights = Path(folder) / filename
    eqx.tree_serialise_leaves(weights, network)
    return {"network": _network_spec(network), "num_parameters": networks.num_parameters(network),
            "weights": filename, "weights_format": WEIGHTS_FORMAT, "sha256": sha256(weights),
            "leaves": _leaves(network)}


def _skeleton(entry: dict, label: str, network, apply):
    """The ``like`` tree the weights of ``entry`` are read into: the user's ``network``, a
    :class:`~pp_diffusion.networks.FunctionNetwork` of ``apply`` over the recorded params, or a
    network of this package rebuilt from its recorded constructor arguments."""
    spec = entry["network"]
    kind = spec.get("class") if isinstance(spec, dict) else None
    if network is not None and apply is not None:
        raise ValueError("give load_model either network= (a skeleton) or apply= (the function of a "
                         "networks.from_function network), not both")
    if network is not None:
        return network
    if apply is not None:
        if kind != _FUNCTION:
            raise ValueError(f"apply= is for networks saved from ppd.networks.from_function; {label} has a network "
                             f"of class {kind!r}" + ("" if kind not in NETWORKS else ": load it without apply="))
        if spec.get("params") is None:
            raise ValueError(f"{label}: the structure of the params of its function network was not recorded "
                             "(it has nodes other than dicts, lists and tuples); pass a skeleton instead, "
                             "network=ppd.networks.from_function(apply, like_params)")
        return networks.from_function(apply, _from_description(spec["params"]))
    if kind == _FUNCTION:
        raise ValueError(f"{label} holds a network made by ppd.networks.from_function (function "
                         f"{spec.get('apply')!r}), whose function is not saved: pass it back as apply=, or pass "
                         "network=ppd.networks.from_function(apply, like_params)")
    if kind not in NETWORKS:
        raise ValueError(f"{label} holds a network of class {kind!r}, which load_model cannot rebuild alone (it "
                         f"rebuilds {', '.join(sorted(NETWORKS))}): pass a skeleton of the same structure, "
                         "network=eqx.filter_eval_shape(MyNetwork, ..., key=jax.random.key(0)), as "
                         "equinox.tree_deserialise_leaves takes `like`")
    try:
        return eqx.filter_eval_shape(build_network, spec)
    except Exception as err:
        raise ValueError(f"{label}: the network {spec!r} in its {MODEL_FILE} cannot be built: {err}") from err


def _check_leaves(entry: dict, skeleton, label: str, given: bool) -> None:
    """The skeleton's leaves must have the recorded paths' shapes and dtypes (up to JAX's float64 ->
    float32 canonicalisation, which is warned about)."""
    recorded = entry.get("leaves")
    if recorded is None:  # zoo files written before leaves were recorded: tree_deserialise_leaves checks
        return
    what = "network (the skeleton)" if given else "the network rebuilt from its card"
    ours = _leaves(skeleton)
    if len(ours) != len(recorded):
        raise ValueError(f"{what} does not match the saved weights of {label}: it has {len(ours)} array leaves, "
                         f"the file {len(recorded)} (first saved: {', '.join(r['path'] for r in recorded[:4])})")
    narrowed = []
    for i, (mine, saved) in enumerate(zip(ours, recorded)):
        where = saved["path"] if mine["path"] == saved["path"] else f"{mine['path']} (saved as {saved['path']})"
        if mine["shape"] != saved["shape"]:
            raise ValueError(f"{what} does not match the saved weights of {label}: leaf {i}, {where}, has shape "
                             f"{tuple(mine['shape'])}, the file {tuple(saved['shape'])}")
        if mine["dtype"] is None or saved["dtype"] is None:
            continue
        stored = jnp.dtype(saved["dtype"])
        if jax.dtypes.canonicalize_dtype(stored) != jax.dtypes.canonicalize_dtype(jnp.dtype(mine["dtype"])):
            raise ValueError(f"{what} does not match the saved weights of {label}: leaf {i}, {where}, has dtype "
                             f"{mine['dtype']}, the file {saved['dtype']}")
        if jax.dtypes.canonicalize_dtype(stored) != stored:
            narrowed.append(saved["dtype"])
    if narrowed:
        warnings.warn(f"{label} stores {narrowed[0]} weights, which load as "
                      f"{jax.dtypes.canonicalize_dtype(jnp.dtype(narrowed[0]))} because jax_enable_x64 is off; "
                      "call jax.config.update('jax_enable_x64', True) before loading to keep them",
                      UserWarning, stacklevel=4)


def read_weights(folder, entry: dict, label: str, hint: str = "", network=None, apply: Callable | None = None):
    """The network of ``entry`` (``network``, ``weights``, ``sha256``, optionally ``leaves``) in ``folder``:
    its skeleton resolved and checked against the recorded leaves, then the weights' SHA-256, then
    the weights read. ``hint`` ends the checksum error (how to get an intact file)."""
    folder = Path(folder)
    skeleton = _skeleton(entry, label, network, apply)
    _check_leaves(entry, skeleton, label, given=network is not None)
    weights = folder / entry["weights"]
    if not weights.is_file():
        raise FileNotFoundError(f"{label}: weights file {weights} is missing")
    actual = sha256(weights)
    if actual != entry["sha256"]:
        raise ChecksumError(f"{label}: checksum mismatch for {weights} (expected SHA-256 {entry['sha256']}, got "
                            f"{actual}); the file is corrupted or was modified.{' ' + hint if hint else ''}")
    try:
        return eqx.tree_deserialise_leaves(weights, skeleton)
    except Exception as err:  # a file that matches its checksum but not the network (zoo files without leaves)
        what = "network (the skeleton)" if network is not None else f"the network described in {folder / MODEL_FILE}"
        raise ValueError(f"{label}: {weights} does not fit {what}: {err}") from err


# --------------------------------------------------------------------------- schedules


def _schedule_spec(schedule) -> dict:
    cls = type(schedule)
    if SCHEDULES.get(cls.__name__) is not cls and cls is not schedules.DiscreteVP:
        raise TypeError(f"model.schedule must be one of the schedules of pp_diffusion.schedules "
                        f"({', '.join(k for k in SCHEDULES if k[0].isupper())}) to be saved, got {cls.__name__}")
    if cls is schedules.DiscreteVP:
        return {"class": "DiscreteVP", "log_alphas": np.asarray(schedule.log_alphas, np.float64).tolist()}
    return {"class": cls.__name__, **{f.name: float(getattr(schedule, f.name)) for f in dataclasses.fields(schedule)}}


def build_schedule(spec: dict, label: str) -> schedules.Schedule:
    """The schedule of a ``model.json`` ``schedule`` entry (``{"class": ..., **fields}``)."""
    spec = dict(spec)
    kind = spec.pop("class", None)
    if kind not in SCHEDULES:
        raise ValueError(f"{label}: unknown schedule class {kind!r} in its {MODEL_FILE}; known: {sorted(SCHEDULES)}")
    try:
        return SCHEDULES[kind](**spec)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{label}: the schedule {kind} in its {MODEL_FILE} cannot be built: {err}") from err


# --------------------------------------------------------------------------- the card


def read_metadata(folder, label: str) -> dict:
    """``folder / model.json`` parsed, with its format version checked."""
    path = Path(folder) / MODEL_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{label}: {path} is not a model card: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{label}: {path} is not a model card: expected a JSON object, got a {type(meta).__name__}")
    version = meta.get("format_version", 1)  # zoo cards written before the field existed are version 1
    if version != FORMAT_VERSION:
        raise ValueError(f"{label} was written in model-file format version {version!r}; this pp_diffusion "
                         f"reads format version {FORMAT_VERSION}: load it with the pp_diffusion that saved it")
    return meta


def _check_card(meta: dict, label: str) -> None:
    if meta.get("kind", "diffusion") != "diffusion":
        raise ValueError(f"{label} is a {meta['kind']!r} checkpoint, not a diffusion model"
                         + (": load zoo classifiers with ppd.zoo.load_classifier" if meta["kind"] == "classifier"
                            else ""))
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"{label}: {MODEL_FILE} is not a model card: it lacks {', '.join(map(repr, missing))} "
                         f"(a card written by ppd.save_model has {', '.join(map(repr, _REQUIRED))})")


def _model_folder(path) -> tuple[Path, str]:
    """The folder of a saved model (``path`` itself, or the folder of a ``model.json`` path) and its label."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike (the folder save_model wrote), got {type(path).__name__}")
    path = Path(path)
    label = f"model at {str(path)!r}"
    if not path.exists():
        raise FileNotFoundError(f"path {str(path)!r} does not exist: expected a folder written by ppd.save_model")
    if path.is_file():
        if path.name != MODEL_FILE:
            raise ValueError(f"path {str(path)!r} is a file: expected a folder written by ppd.save_model "
                             f"(holding {MODEL_FILE} and {WEIGHTS_FILE}), or its {MODEL_FILE}")
        path = path.parent
    elif not (path / MODEL_FILE).is_file():
        raise FileNotFoundError(f"path {str(path)!r} is not a saved model: the folder has no {MODEL_FILE} "
                                f"(ppd.save_model writes {MODEL_FILE} and {WEIGHTS_FILE})")
    return path, label


def load_card(path) -> dict:
    """The card (``model.json``, as a dict) of the model saved at ``path``: what :func:`save_model`
    recorded (network, schedule, parameterization, checksum, ...) and the user's own ``card`` entries.

    Examples
    --------
    >>> import tempfile, jax.numpy as jnp, pp_diffusion as ppd
    >>> net = ppd.networks.from_function(lambda p, x, t: p * x, jnp.ones(2))
    >>> model = ppd.DiffusionModel(net, "eps", ppd.schedules.VPCosine(), (2,))
    >>> folder = ppd.save_model(model, tempfile.mkdtemp() + "/m", card={"data": "toy"})
    >>> ppd.load_card(folder)["data"], ppd.load_card(folder)["format_version"]
    ('toy', 1)
    """
    folder, label = _model_folder(path)
    meta = read_metadata(folder, label)
    _check_card(meta, label)
    return meta


def model_from_card(folder, meta: dict, label: str, *, name: str, hint: str = "", network=None,
                    apply: Callable | None = None) -> DiffusionModel:
    """The :class:`DiffusionModel` a checked card ``meta`` in ``folder`` describes (zoo and users alike)."""
    _check_card(meta, label)
    schedule = build_schedule(meta["schedule"], label)  # cheap checks before the weights are read
    loaded = read_weights(folder, meta, label, hint, network=network, apply=apply)
    return DiffusionModel(
        loaded,
        meta["parameterization"],
        schedule,
        tuple(meta["event_shape"]),
        name=name,
        data_var=meta.get("data_var", 1.0),
        data_range=meta.get("data_range"),
        t_start=meta.get("t_start", 1.0),
    )


# --------------------------------------------------------------------------- the public face


def save_model(model: DiffusionModel, path, card: dict | None = None, *, overwrite: bool = False) -> Path:
    """Save a :class:`~pp_diffusion.DiffusionModel` over an Equinox network to the folder ``path``.

    Writes ``weights.eqx`` (the network's array leaves, by :func:`equinox.tree_serialise_leaves`:
    ``.npy`` records, no pickle) and ``model.json`` (the card: format version, network class and,
    for the networks of :mod:`pp_diffusion.networks`, constructor arguments, the shape and dtype of
    every leaf, parameterization, schedule, event shape, ``data_var``, ``data_range``, ``t_start``,
    name, the SHA-256 of the weights, and ``card``). :func:`load_model` reads it back.

    Parameters
    ----------
    model
        The model. Its network must be an Equinox module: one of :mod:`pp_diffusion.networks`
        (rebuilt on load from the card alone), a :func:`~pp_diffusion.networks.from_function`
        wrapper of a plain function (load with ``apply=``), or any other module (load with a
        skeleton, ``network=``). Its schedule must be one of :mod:`pp_diffusion.schedules`.
    path
        The folder to write (created if missing).
    card
        Free-form JSON-serialisable metadata (data set, training run, losses, licence, ...) stored
        in ``model.json`` next to what ``save_model`` records itself (whose keys it may not use).
    overwrite
        Replace a model already saved at ``path``; by default that raises ``FileExistsError``.

    Returns
    -------
    The folder, a ``pathlib.Path``.

    Notes
    -----
    Arrays are saved in their own dtype: float32 by default, float64 for a model built after
    ``jax.config.update("jax_enable_x64", True)``. Loading float64 weights without x64 gives float32
    (with a warning). The schedule's fields are stored as JSON numbers and are rebuilt in JAX's
    default float dtype at load time.
    """
    if not isinstance(model, DiffusionModel):
        raise TypeError(f"model must be a pp_diffusion.DiffusionModel, got {type(model).__name__}")
    if not isinstance(model.network, eqx.Module):
        raise TypeError(f"model.network must be an Equinox module to be saved, got {type(model.network).__name__}; "
                        "wrap a plain function apply(params, x, t) with ppd.networks.from_function(apply, params)")
    if model.data_distribution is not None:
        raise ValueError(f"model {model.name!r} has an exact data_distribution "
                         f"({type(model.data_distribution).__name__}), which save_model does not store; save a "
                         "model over a trained network")
    schedule = _schedule_spec(model.schedule)
    card = {} if card is None else card
    if not isinstance(card, dict):
        raise TypeError(f"card must be a dict of JSON-serialisable metadata or None, got {type(card).__name__}")
    clash = [k for k in card if k in _RESERVED]
    if clash:
        raise ValueError(f"card may not use the keys save_model writes itself: {', '.join(map(repr, clash))}")
    try:
        card_json = json.loads(json.dumps(card))
    except (TypeError, ValueError) as err:
        raise TypeError(f"card must be JSON-serialisable: {err}") from None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike (a folder), got {type(path).__name__}")
    folder = Path(path)
    if folder.is_file():
        raise ValueError(f"path {str(folder)!r} is a file: save_model writes a folder ({MODEL_FILE}, {WEIGHTS_FILE})")
    if (folder / MODEL_FILE).exists() and not overwrite:
        raise FileExistsError(f"a model is already saved at {str(folder)!r}; pass overwrite=True to replace it")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_FILE).unlink(missing_ok=True)  # written last: a folder with a model.json is a complete model
    entry = write_weights(folder, model.network)
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": "diffusion",
        "name": model.name,
        "network": entry.pop("network"),
        "num_parameters": entry.pop("num_parameters"),
        "parameterization": model.parameterization,
        "schedule": schedule,
        "event_shape": list(model.event_shape),
        "data_var": model.data_var,
        "data_range": None if model.data_range is None else list(model.data_range),
        "t_start": model.t_start,
        **entry,
        **card_json,
    }
    tmp = folder / (MODEL_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    tmp.replace(folder / MODEL_FILE)
    return folder


def load_model(path, network: Any = None, *, apply: Callable | None = None, name: str | None = None) -> DiffusionModel:
    """Load a :class:`~pp_diffusion.DiffusionModel` saved by :func:`save_model` (or a zoo folder).

    Parameters
    ----------
    path
        The folder :func:`save_model` wrote (or its ``model.json``).
    network
        A skeleton of the saved network, for a network class this package cannot rebuild alone:
        any module of the same structure and leaf shapes (its values are replaced), ideally
        shape-only, ``eqx.filter_eval_shape(MyNetwork, ..., key=jax.random.key(0))``; the
        ``like`` of :func:`equinox.tree_deserialise_leaves`. Not needed for the networks of
        :mod:`pp_diffusion.networks`, which the card describes.
    apply
        The function of a :func:`~pp_diffusion.networks.from_function` network (functions are
        not saved); its params are rebuilt from the card.
    name
        The model's name; default the saved one.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist, has no ``model.json``, or its weights file is missing.
    ValueError
        ``model.json`` is not a model card or was written in another format version; the
        network cannot be rebuilt without ``network=`` / ``apply=``; the skeleton's leaves do not
        have the saved shapes and dtypes.
    ChecksumError
        The weights do not match the SHA-256 in the card (a ``ValueError``).

    All of these are raised before the weights are read. Weights come back in the dtype they
    were saved in (float64 ones as float32 unless ``jax_enable_x64`` is on, with a warning).

    Examples
    --------
    >>> import tempfile, jax, jax.numpy as jnp, pp_diffusion as ppd
    >>> net = ppd.networks.ResidualMLP((2,), width=16, depth=1, emb_dim=8, key=jax.random.key(0))
    >>> model = ppd.DiffusionModel(net, "eps", ppd.schedules.VPCosine(), (2,))
    >>> folder = ppd.save_model(model, tempfile.mkdtemp() + "/mlp")
    >>> bool(jnp.all(ppd.load_model(folder).eps(jnp.ones(2), 0.5) == model.eps(jnp.ones(2), 0.5)))
    True
    """
    folder, label = _model_folder(path)
    meta = read_metadata(folder, label)
    return model_from_card(folder, meta, label, name=meta.get("name", folder.name) if name is None else name,
                           hint="Save the model again with ppd.save_model.", network=network, apply=apply)
