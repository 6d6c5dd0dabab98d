"""pp_diffusion: probabilistic programming with diffusion-model priors.

A trained diffusion model becomes the prior of a latent variable in an ordinary NumPyro
program (``numpyro.sample("x", DiffusionPrior(model))``); :func:`infer` samples the program
with a sampler value and returns an ArviZ ``DataTree``.

The public names below load on first use (a module ``__getattr__``, PEP 562): ``import
pp_diffusion`` alone imports neither JAX nor NumPyro nor ArviZ, so the ``pp-diffusion`` command
answers ``--help`` at once. Each name imports its module when first used (NumPyro first).
"""

import importlib
import importlib.util
import sys

__version__ = "0.1.0"

# The public names, each with the module that defines it (a submodule is its own name).
_SUBMODULES = (
    "diagnostics", "integrators", "metrics", "networks", "parameterization", "schedules", "smc", "guidance",
    "potentials", "twists", "operators", "zoo", "mcmc", "tree", "pmcmc",
)
_NAMES = {
    "infer": "_infer",
    "GaussianMixture": "gmm",
    "DiffusionModel": "model",
    "DiffusionPrior": "prior",
    "Sampler": "samplers",
    "SamplerOutput": "samplers",
    "iid": "samplers",
    "pmmh": "pmcmc",
    "particle_gibbs": "pmcmc",
    "EnergyPrior": "energy",
    "product": "energy",
    "compose": "energy",
    "temper": "energy",
    "guided": "energy",
    "DenoisingVariance": "x0_variance",
    "denoising_variance": "x0_variance",
    "save_model": "_model_io",
    "load_model": "_model_io",
    "load_card": "_model_io",
}

__all__ = [*_SUBMODULES, *_NAMES, "__version__"]



def _numpyro_first() -> None:
    # NumPyro before ArviZ: arviz_base registers ``numpyro`` as a lazily loaded module, and a NumPyro
    # whose submodules are imported through that stub lacks the ``numpyro.distributions.distribution``
    # attribute that ``numpyro.factor`` reads (AttributeError in any program with a factor). Reading
    # an attribute runs a stub's ``numpyro/__init__`` whole before any submodule is imported.
    import numpyro

    numpyro.sample  # noqa: B018
    import numpyro.distributions  # noqa: F401


def _import(module: str):
    _numpyro_first()
    return importlib.import_module(f"{__name__}.{module}")


if "arviz_base" in sys.modules:  # ArviZ came first: a submodule imported directly needs NumPyro now
    _numpyro_first()


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(_import(_NAMES[name]), name)
    elif name in _SUBMODULES or (not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}")):
        value = _import(name)  # a public submodule, or another one (``pp_diffusion.networks``)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})
