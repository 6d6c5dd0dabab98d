"""Train the ``digits_conditional`` zoo model: a class-conditional eps-prediction denoiser on scikit-learn's
8x8 digits, trained for classifier-free guidance.

    python models/digits_conditional/train.py                 # the shipped checkpoint (seed 0)
    python models/digits_conditional/train.py --no-progress --steps 500 --out /tmp/digits_cond   # a quick try

Everything but the conditioning is ``models/digits/train.py`` (imported, not copied): the same data,
split (``pp_diffusion/_zoo/digits_split.json``), U-Net, schedule (VPCosine), optimiser, EMA and
evaluation. The network is ``UNet(..., num_classes=10)``, called as ``network(x, t, label)``; label 10
is the null class. During training each image's label is replaced by the null class with probability
``--label-dropout`` (0.1), so one network learns both eps(x, t, c) and the unconditional eps(x, t, null)
(Ho & Salimans, 2022, "Classifier-Free Diffusion Guidance"). The final losses are reported at the true
labels and at the null class, on the train and test splits.

Output (default ``pp_diffusion/_zoo/digits_conditional/``): ``weights.eqx`` and ``model.json``, whose
``conditioning`` entry (``num_classes``, ``null_class``) tells :func:`pp_diffusion.zoo.load` and
:func:`pp_diffusion.guidance.classifier_free` how to call the network.
"""

from __future__ import annotations

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import training  # noqa: E402  (models/training.py)

digits_train = training.load_script("digits/train.py")


def main(argv=None):
    parser = digits_train.make_parser("digits_conditional", __doc__)
    parser.add_argument("--label-dropout", type=float, default=0.1,
                        help="probability of training a draw with the null class instead of its label")
    parser.set_defaults(num_classes=10, script="models/digits_conditional/train.py",
                        description="Class-conditional eps-prediction denoiser on the scikit-learn 8x8 digits "
                                    "(pixels in [-1, 1]) for classifier-free guidance: network(x, t, label), "
                                    "label 0-9, label 10 is the null class (unconditional).")
    args = digits_train.training.parse(parser, argv)
    if not 0.0 < args.label_dropout < 1.0:
        parser.error(f"--label-dropout must be in (0, 1), got {args.label_dropout}")
    if args.arch != "unet":
        parser.error("class conditioning needs --arch unet")
    digits_train.train(args)


if __name__ == "__main__":
    main()
