"""The network of the ``digits_conditional_energy`` zoo model: :class:`pp_diffusion.networks.EnergyUNet`
with ``num_classes=10`` (the hyper-parameters of ``digits_conditional``'s U-Net, in
``pp_diffusion/_zoo/digits_conditional_energy/model.json``), called as ``network(x, t, label)``; label 10,
the default, is the null class."""

from pp_diffusion.networks import EnergyUNet, UNet, num_parameters

__all__ = ["EnergyUNet", "UNet", "num_parameters"]
