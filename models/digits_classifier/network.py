"""The network of the ``digits_classifier`` zoo models.

It is :class:`pp_diffusion.networks.Classifier`, defined once inside the package so that
``pp_diffusion.zoo.load_classifier`` can rebuild it from an installed wheel; this module re-exports
it next to the training script. The shipped hyper-parameters are in
``pp_diffusion/_zoo/digits_classifier/model.json`` (``networks.<clean|noise_conditional>.network.config``)::

    Classifier(size=8, channels=32, channel_mult=(1, 2), blocks=1, num_classes=10, emb_dim=None, key=...)  # f(x)
    Classifier(size=8, channels=32, channel_mult=(1, 2), blocks=1, num_classes=10, emb_dim=64, key=...)    # g(x_t, t)

acting on one unbatched image of shape (8, 8) (and a scalar time t in [0, 1]), returning 10 logits.
"""

from pp_diffusion.networks import Classifier, num_parameters

__all__ = ["Classifier", "num_parameters"]
