"""Train the ``digits_conditional_energy`` zoo model: a class-conditional energy distilled from
``digits_conditional`` (label 10 is the null class).

    python models/digits_conditional_energy/train.py     # the shipped checkpoint (seed 0)

Everything is ``models/digits_energy/train.py`` (imported, not copied) with ``--teacher
digits_conditional``: the network is ``EnergyUNet(..., num_classes=10)``, ``network(x, t, label)``
the energy of class ``label`` (``network(x, t)``: the null class); each training image's label is
replaced by the null class with the teacher's label-dropout probability (0.1), and the energy of a
label is fitted to the teacher's score of the same label. The relative gap in ``model.json`` is at
the null class; the losses are at the true labels and at the null class.
"""

from __future__ import annotations

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import training  # noqa: E402  (models/training.py)

energy_train = training.load_script("digits_energy/train.py")


def main(argv=None):
    parser = energy_train.make_parser("digits_conditional_energy", "digits_conditional", __doc__)
    parser.set_defaults(description="Class-conditional energy-parameterised diffusion model E(x, t, label) = "
                                    "||u(x, t, label)||^2 / 2 distilled from the 'digits_conditional' eps model "
                                    "(conservative projection of its score per label); label 10 is the null class; "
                                    "scikit-learn 8x8 digits, pixels in [-1, 1].")
    energy_train.train(energy_train.training.parse(parser, argv))


if __name__ == "__main__":
    main()
