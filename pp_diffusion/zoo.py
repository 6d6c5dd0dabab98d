"""The trained models that ship with the package.

``zoo.load(name)`` returns a :class:`~pp_diffusion.DiffusionModel` ready for
:class:`~pp_diffusion.DiffusionPrior`; ``zoo.available()`` lists the names; ``zoo.card(name)``
returns the model's metadata (data, split, architecture, parameter count, training run, losses).
Phase-space models (``"kind": "augmented"``; ``zoo.available("augmented")``, e.g. ``digits_psld``)
load with ``zoo.load`` as a :class:`~pp_diffusion.phase_space.AugmentedModel`.
Classifiers (``"kind": "classifier"`` in their ``model.json``; ``zoo.available("classifier")``)
load with ``zoo.load_classifier(name)``: a clean one for likelihoods and quality figures, a
noise-conditional one for twists and guidance.

Each model lives in ``pp_diffusion/_zoo/<name>/`` (package data, so it ships in the wheel):

- ``weights.eqx``: the network's array leaves written by :func:`equinox.tree_serialise_leaves`
  (a sequence of ``.npy`` records; read back with ``allow_pickle=False``, so no pickle anywhere);
- ``model.json``: everything needed to rebuild the model: the network class and its constructor
  arguments, the parameterization, the schedule and its fields, the event shape, ``data_var``, the
  SHA-256 of ``weights.eqx`` (checked on every load) and the training record.

This is the format of :func:`pp_diffusion.save_model` and :func:`pp_diffusion.load_model`, which
share its reader and writer: ``zoo.load`` also takes the path of a saved model's folder.

The training scripts, model cards and quality figures are in the repository's ``models/<name>/``.
The scikit-learn digits split used for training and evaluation is stored once, in
``pp_diffusion/_zoo/digits_split.json``, and :func:`digits_data` returns it; :func:`toy2d_data`
draws the 2-D data sets of the ``toy2d_*`` models.

A class-conditional model (``model.json`` has ``"conditioning": {"num_classes": K, "null_class": K}``,
e.g. ``digits_conditional``) loads as the unconditional model (its network called as
``network(x, t)`` uses the null class); :func:`pp_diffusion.guidance.classifier_free` turns it
into the guided model of one class.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pp_diffusion import _model_io
from pp_diffusion._model_io import ChecksumError as ChecksumError, build_network as build_network, sha256 as sha256
from pp_diffusion._toy2d import TOY2D as TOY2D, toy2d_data as toy2d_data
from pp_diffusion.model import DiffusionModel

__all__ = ["available", "load", "load_classifier", "card", "digits_data", "digits_images", "DigitsData", "ChecksumError",
           "build_network", "sha256", "toy2d_data", "TOY2D"]

_ZOO_DIR = Path(__file__).resolve().parent / "_zoo"
_METADATA = _model_io.MODEL_FILE
_KINDS = ("diffusion", "augmented", "classifier")


def _kind(folder: Path) -> str:
    with open(folder / _METADATA, encoding="utf-8") as f:
        return json.load(f).get("kind", "diffusion")


def available(kind: str | None = "diffusion") -> list[str]:
    """Names of the models of ``kind`` that ship with the package, sorted: ``"diffusion"`` (the
    default; :func:`load`), ``"augmented"`` (phase-space models, also :func:`load`), ``"classifier"``
    (:func:`load_classifier`) or ``None`` for all."""
    if kind is not None and kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, _KINDS))} or None (all), got {kind!r}")
    if not _ZOO_DIR.is_dir():
        return []
    folders = [p for p in _ZOO_DIR.iterdir() if (p / _METADATA).is_file()]
    return sorted(p.name for p in folders if kind is None or _kind(p) == kind)


def _folder(name: str) -> Path:
    names = available(None)
    if not isinstance(name, str) or name not in names:
        folder = isinstance(name, str) and Path(name).is_dir()
        raise ValueError(f"unknown zoo model {name!r}; available: {', '.join(names) or '(none)'}"
                         + (f"; to load the model saved in the folder {name!r}, pass a path: "
                            f"zoo.load('./{name}') or ppd.load_model({name!r})" if folder else ""))
    return _ZOO_DIR / name


def _metadata(name: str) -> dict:
    return _model_io.read_metadata(_folder(name), f"zoo model {name!r}")


def _hint(name: str) -> str:
    return (f"Reinstall pp_diffusion, or retrain with models/{name}/train.py, which rewrites the weights and "
            "their checksum.")


def card(name: str) -> dict:
    """The metadata of zoo model ``name`` (a copy of its ``model.json``): network class and
    hyper-parameters, parameter count, parameterization, schedule, event shape, data variance,
    data set and split, the training run (seed, steps, optimiser, wall time, machine) and the final
    train and test losses (for a classifier: per network, under ``networks``, and accuracies).
    The full model card is ``models/<name>/CARD.md`` in the repository."""
    return copy.deepcopy(_metadata(name))


def _is_path(name) -> bool:
    return isinstance(name, os.PathLike) or (isinstance(name, str) and ("/" in name or os.sep in name))


def load(name: str) -> DiffusionModel:
    """The zoo model ``name`` as a :class:`~pp_diffusion.DiffusionModel` (a phase-space model, kind
    ``"augmented"``, as a :class:`~pp_diffusion.phase_space.AugmentedModel`).

    The weights' SHA-256 is checked against ``model.json`` first: a corrupted or modified file
    raises :class:`ChecksumError`. An unknown name raises ``ValueError`` listing :func:`available`.
    A path (an ``os.PathLike``, or a string with a ``/``) loads the model saved there, as
    :func:`pp_diffusion.load_model` does.

    Examples
    --------
    >>> import jax, pp_diffusion as ppd
    >>> prior = ppd.DiffusionPrior(ppd.zoo.load("digits"), steps=50)
    >>> prior.sample(jax.random.key(0), (4,)).shape
    (4, 8, 8)
    """
    if _is_path(name):
        return _model_io.load_model(name)
    meta = _metadata(name)
    if meta.get("kind") == "augmented":
        return _load_augmented(name, meta)
    if meta.get("kind", "diffusion") != "diffusion":
        raise ValueError(f"zoo model {name!r} is a {meta['kind']}, not a diffusion model: load it with "
                         f"zoo.load_classifier({name!r}); diffusion models: {', '.join(available()) or '(none)'}")
    model = _model_io.model_from_card(_folder(name), meta, f"zoo model {name!r}", name=name, hint=_hint(name))
    _check_conditioning(name, meta, model.network)
    return model


def _load_augmented(name: str, meta: dict):
    from pp_diffusion.phase_space import PSLD, AugmentedModel

    sde = meta["sde"]
    if sde.get("class") != "PSLD":
        raise ValueError(f"zoo model {name!r}: unknown phase-space process {sde.get('class')!r} (known: 'PSLD')")
    process = PSLD(beta=sde["beta"], gamma=sde["gamma"], nu=sde["nu"], m0_var_scale=sde["m0_var_scale"])
    network = _model_io.read_weights(_folder(name), meta, f"zoo model {name!r}", _hint(name))
    return AugmentedModel(network, process, tuple(meta["event_shape"]), name=name, data_range=meta.get("data_range"),
                          data_var=meta.get("data_var", 1.0), t_min=meta.get("t_min", 1e-3))


def load_classifier(name: str = "digits_classifier", noise_conditional: bool = False):
    """The classifier of zoo model ``name``: an Equinox module mapping one unbatched input to logits,
    ``f(x)`` (clean) or, with ``noise_conditional=True``, ``g(x_t, t)``, a model of p(c | x_t, t) on the
    schedule in ``card(name)["schedule"]`` (for :func:`pp_diffusion.potentials.classifier`'s
    ``noisy_logits_fn``). ``f.features(x)`` is the penultimate layer (quality figures such as
    :func:`pp_diffusion.metrics.frechet_distance`). The weights' SHA-256 is checked first, as in :func:`load`.

    Examples
    --------
    >>> import jax, pp_diffusion as ppd
    >>> f = ppd.zoo.load_classifier("digits_classifier")
    >>> data = ppd.zoo.digits_data()
    >>> f(data.x_test[0]).shape
    (10,)
    >>> int(f(data.x_test[0]).argmax()) == int(data.y_test[0])
    True
    """
    meta = _metadata(name)
    if meta.get("kind", "diffusion") != "classifier":
        raise ValueError(f"zoo model {name!r} is a {meta.get('kind', 'diffusion')} model, not a classifier: "
                         f"load it with zoo.load({name!r}); classifiers: {', '.join(available('classifier')) or '(none)'}")
    which = "noise_conditional" if noise_conditional else "clean"
    if which not in meta["networks"]:
        raise ValueError(f"zoo classifier {name!r} has no {which} network; it has: {', '.join(meta['networks'])}")
    return _model_io.read_weights(_folder(name), meta["networks"][which], f"zoo model {name!r}", _hint(name))


def _check_conditioning(name: str, meta: dict, network) -> None:
    """A class-conditional network must match its ``model.json["conditioning"]``: the null class is
    ``num_classes``, which is what ``network(x, t)`` and classifier-free guidance use."""
    cond = meta.get("conditioning")
    num_classes = getattr(network, "num_classes", None)
    if cond is None and num_classes is None:
        return
    if cond is None or num_classes is None or cond.get("num_classes") != num_classes \
            or cond.get("null_class") != num_classes:
        raise ValueError(f"zoo model {name!r}: model.json conditioning {cond!r} does not match the network "
                         f"(num_classes={num_classes!r}; the null class must be num_classes)")


# --------------------------------------------------------------------------- the digits data


class DigitsData(NamedTuple):
    """The scikit-learn digits with the zoo's fixed split; images are float32 ``(n, 8, 8)`` in [-1, 1]
    (pixel / 8 - 1), labels int ``(n,)``; ``*_index`` are the rows of ``load_digits()``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    train_index: np.ndarray
    test_index: np.ndarray


DIGITS_SPLIT = "digits_split.json"


def digits_images():
    """All 1,797 scikit-learn digits (bundled with scikit-learn; no download) scaled from [0, 16] to
    [-1, 1] as float32 ``(1797, 8, 8)``, with their labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - scikit-learn is a dependency
        raise ImportError("the digits data needs scikit-learn: pip install scikit-learn") from err
    digits = load_digits()
    images = (digits.images / 8.0 - 1.0).astype(np.float32)
    return images, digits.target.astype(np.int64)


def digits_data() -> DigitsData:
    """The digits with the fixed train/test split every digits model in the zoo was trained and is
    evaluated with (stratified, 20% test, ``random_state=0``; 1,437 / 360 images)."""
    with open(_ZOO_DIR / DIGITS_SPLIT, encoding="utf-8") as f:
        split = json.load(f)
    images, labels = digits_images()
    train = np.asarray(split["train_index"], dtype=np.int64)
    test = np.asarray(split["test_index"], dtype=np.int64)
    return DigitsData(images[train], labels[train], images[test], labels[test], train, test)
