"""The network of the ``digits`` zoo model.

It is :class:`pp_diffusion.networks.UNet`, defined once inside the package so that
``pp_diffusion.zoo.load("digits")`` can rebuild it from an installed wheel; this module re-exports
it next to the training script. The shipped hyper-parameters are in
``pp_diffusion/_zoo/digits/model.json`` (``network.config``)::

    UNet(size=8, channels=32, channel_mult=(1, 2), blocks=1, emb_dim=64, key=...)

acting on one unbatched image ``x`` of shape (8, 8) and a scalar time ``t`` in [0, 1], predicting eps.
"""

from pp_diffusion.networks import UNet, num_parameters, sinusoidal_embedding

__all__ = ["UNet", "num_parameters", "sinusoidal_embedding"]
