"""The network of the ``digits_conditional`` zoo model.

It is :class:`pp_diffusion.networks.UNet` with ``num_classes=10``, defined once inside the package
so that ``pp_diffusion.zoo.load("digits_conditional")`` can rebuild it from an installed wheel; the
shipped hyper-parameters are in ``pp_diffusion/_zoo/digits_conditional/model.json``::

    UNet(size=8, channels=32, channel_mult=(1, 2), blocks=1, emb_dim=64, num_classes=10, key=...)

called as ``network(x, t, label)`` on one unbatched (8, 8) image, a scalar time t in [0, 1] and a
label in 0-9, or 10 (the null class, also what ``network(x, t)`` uses), predicting eps. A learned
embedding of the label is added to the time embedding.
"""

from pp_diffusion.networks import UNet, num_parameters

__all__ = ["UNet", "num_parameters"]
