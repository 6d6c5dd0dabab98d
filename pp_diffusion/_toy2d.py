"""The 2-D toy data sets of the ``toy2d_*`` zoo models: moons, spirals and a checkerboard, standardised."""

from __future__ import annotations

import numpy as np

__all__ = ["TOY2D", "toy2d_data"]

TOY2D = ("moons", "spirals", "checkerboard")

# Per-coordinate mean and standard deviation of the raw generators (10^6 draws, seed 0; the
# checkerboard's are exact: each coordinate is uniform on [-2, 2]). The standardised data have
# mean ~0 and variance ~1 per coordinate.
_STANDARDISATION = {
    "moons": ((0.5000, 0.2500), (0.8716, 0.5042)),
    "spirals": ((0.0, 0.0), (4.802, 4.639)),
    "checkerboard": ((0.0, 0.0), (2 / np.sqrt(3), 2 / np.sqrt(3))),
}


def _moons(n: int, rng: np.random.Generator) -> np.ndarray:
    from sklearn.datasets import make_moons

    x, _ = make_moons(n_samples=n, noise=0.1, random_state=int(rng.integers(2**31 - 1)))
    return x


def _spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    # two arms r = theta, theta = 3 pi sqrt(u) (uniform along the arm length), the second arm the
    # first rotated by pi, plus N(0, 0.3^2) noise
    theta = 3 * np.pi * np.sqrt(rng.uniform(size=n))
    arm = np.where(rng.uniform(size=n) < 0.5, 1.0, -1.0)
    x = arm[:, None] * theta[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    return x + 0.3 * rng.normal(size=(n, 2))


def _checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    # uniform on the 8 black squares (i + j even) of a 4x4 board of unit squares on [-2, 2]^2
    cells = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0])
    corner = cells[rng.integers(len(cells), size=n)]
    return corner + rng.uniform(size=(n, 2)) - 2.0


_GENERATORS = {"moons": _moons, "spirals": _spirals, "checkerboard": _checkerboard}


def toy2d_data(name: str, n: int, seed: int = 0, *, standardise: bool = True) -> np.ndarray:
    """``n`` i.i.d. draws, float32 ``(n, 2)``, of the 2-D toy data set ``name``:

    - ``"moons"``: ``sklearn.datasets.make_moons(noise=0.1)`` (two interleaved half circles);
    - ``"spirals"``: two interleaved spiral arms r = theta, theta in [0, 3 pi] (uniform along the
      arm), noise N(0, 0.3^2);
    - ``"checkerboard"``: uniform on the 8 black squares of a 4x4 board on [-2, 2]^2.

    With ``standardise`` (the default, and how the ``toy2d_*`` zoo models were trained) each
    coordinate is shifted and scaled by fixed constants to mean ~0 and variance ~1. Draws are a
    deterministic function of ``seed`` (``numpy.random.default_rng``).
    """
    if name not in _GENERATORS:
        raise ValueError(f"unknown toy2d data set {name!r}; available: {', '.join(TOY2D)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    x = _GENERATORS[name](int(n), np.random.default_rng(seed))
    if standardise:
        mean, std = _STANDARDISATION[name]
        x = (x - np.asarray(mean)) / np.asarray(std)
    return x.astype(np.float32)
