"""pp_diffusion: probabilistic programming with diffusion-model priors.

A trained diffusion model becomes the prior of a latent variable in an ordinary NumPyro
program (``numpyro.sample("x", DiffusionPrior(model))``); :func:`infer` samples the program
with a sampler value and returns an ArviZ ``DataTree``.
"""

# NumPyro before ArviZ: arviz_base registers ``numpyro`` as a lazily loaded module, and a NumPyro
# imported through that stub lacks the ``numpyro.distributions.distribution`` attribute that
# ``numpyro.factor`` reads (AttributeError in any program with a factor, in a fresh session that
# imports pp_diffusion first).
import numpyro.distributions  # noqa: F401, I001

from pp_diffusion import diagnostics as diagnostics
from pp_diffusion import integrators as integrators
from pp_diffusion import metrics as metrics
from pp_diffusion import networks as networks
from pp_diffusion import parameterization as parameterization
from pp_diffusion import schedules as schedules
from pp_diffusion import smc as smc
from pp_diffusion import guidance as guidance
from pp_diffusion import potentials as potentials
from pp_diffusion import twists as twists
from pp_diffusion import operators as operators
from pp_diffusion import zoo as zoo
from pp_diffusion._infer import infer as infer
from pp_diffusion.gmm import GaussianMixture as GaussianMixture
from pp_diffusion.model import DiffusionModel as DiffusionModel
from pp_diffusion._model_io import save_model as save_model, load_model as load_model, load_card as load_card
from pp_diffusion.prior import DiffusionPrior as DiffusionPrior
from pp_diffusion.samplers import Sampler as Sampler, SamplerOutput as SamplerOutput, iid as iid
from pp_diffusion.x0_variance import DenoisingVariance as DenoisingVariance, denoising_variance as denoising_variance

__version__ = "0.1.0"
