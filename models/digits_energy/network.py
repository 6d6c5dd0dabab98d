"""The network of the ``digits_energy`` zoo model.

It is :class:`pp_diffusion.networks.EnergyUNet`, defined once inside the package so that
``pp_diffusion.zoo.load("digits_energy")`` can rebuild it from an installed wheel; this module
re-exports it next to the training script. The shipped hyper-parameters are in
``pp_diffusion/_zoo/digits_energy/model.json`` (``network.config``), those of the teacher's U-Net::

    EnergyUNet(size=8, channels=32, channel_mult=(1, 2), blocks=1, emb_dim=64, key=...)

acting on one unbatched image ``x`` of shape (8, 8) and a scalar time ``t`` in [0, 1], returning the
scalar energy E(x, t) = ||u(x, t)||^2 / 2 (score -grad_x E).
"""

from pp_diffusion.networks import EnergyUNet, UNet, num_parameters

__all__ = ["EnergyUNet", "UNet", "num_parameters"]
