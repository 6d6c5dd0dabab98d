"""The network of the ``toy2d_moons``, ``toy2d_spirals`` and ``toy2d_checkerboard`` zoo models.

It is :class:`pp_diffusion.networks.ResidualMLP`, defined once inside the package so that
``pp_diffusion.zoo.load("toy2d_moons")`` can rebuild it from an installed wheel; this module
re-exports it next to the training script. The shipped hyper-parameters are in
``pp_diffusion/_zoo/toy2d_<name>/model.json`` (``network.config``)::

    ResidualMLP(event_shape=(2,), width=128, depth=4, emb_dim=32, key=...)

acting on one unbatched point ``x`` of shape (2,) and a scalar time ``t`` in [0, 1], predicting eps.
The data generators are :func:`pp_diffusion.zoo.toy2d_data`.
"""

from pp_diffusion.networks import ResidualMLP, num_parameters

__all__ = ["ResidualMLP", "num_parameters"]
