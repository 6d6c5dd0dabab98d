"""Linear forward operators for inverse problems: y = A x (+ noise).

Each operator acts on one unbatched x of shape ``in_shape`` and returns y of shape
``out_shape``; ``transpose`` is the adjoint; ``matrix()`` the dense ``(dy, d)`` matrix over
flattened arrays; ``svd()`` returns ``(U, s, Vt)`` with ``A = U diag(s) Vt`` (closed form where it
is cheap: masks and average pooling; a dense decomposition otherwise). Use them inside a
program as ``numpyro.sample("y", dist.Normal(op(x), sigma), obs=y)``; the program tracer reads
the linear-Gaussian structure from the observation itself, so any linear function of x works the
same way.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["LinearOperator", "Inpaint", "Downsample", "Blur", "Dense"]


class LinearOperator(eqx.Module):
    """Base class: subclasses define ``in_shape``, ``out_shape`` and :meth:`apply`."""

    in_shape: tuple[int, ...] = eqx.field(static=True)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return jax.eval_shape(self.apply, jnp.zeros(self.in_shape)).shape

    def apply(self, x):
        raise NotImplementedError

    def __call__(self, x):
        x = jnp.asarray(x)
        if x.shape[-len(self.in_shape):] != self.in_shape:
            raise ValueError(
                f"{type(self).__name__} expects x with trailing shape {self.in_shape}, got {x.shape}"
            )
        batch = x.shape[: x.ndim - len(self.in_shape)]
        flat = x.reshape((-1, *self.in_shape))
        out = jax.vmap(self.apply)(flat)
        return out.reshape(batch + out.shape[1:])

    def transpose(self, y):
        """A^T y for one y of ``out_shape``."""
        _, vjp = jax.vjp(self.apply, jnp.zeros(self.in_shape))
        return vjp(jnp.asarray(y))[0]

    def matrix(self) -> np.ndarray:
        d = math.prod(self.in_shape)
        cols = jax.vmap(lambda e: self.apply(e.reshape(self.in_shape)).reshape(-1))(jnp.eye(d))
        return np.asarray(cols).T

    def svd(self):
        u, s, vt = np.linalg.svd(self.matrix(), full_matrices=False)
        return u, s, vt


def _shape(shape) -> tuple[int, ...]:
    shape = (shape,) if isinstance(shape, int) else tuple(int(n) for n in shape)
    if not shape or any(n < 1 for n in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive ints, got {shape!r}")
    return shape


class Inpaint(LinearOperator):
    """Keep the pixels where ``mask`` is true: y = x[mask] (a flat vector of the observed values)."""

    # a tuple, not an array: static fields must be hashable and compare by value, so that two
    # operators with the same mask can be passed to the same jitted function
    index: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, mask):
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim == 0 or not mask.any():
            raise ValueError(f"mask must be a boolean array with at least one observed entry, got shape {mask.shape}")
        self.in_shape = mask.shape
        self.index = tuple(int(i) for i in np.flatnonzero(mask))

    def apply(self, x):
        return x.reshape(-1)[np.asarray(self.index, dtype=np.int64)]

    def svd(self):
        d = math.prod(self.in_shape)
        dy = len(self.index)
        vt = np.zeros((dy, d))
        vt[np.arange(dy), np.asarray(self.index, dtype=np.int64)] = 1.0
        return np.eye(dy), np.ones(dy), vt


class Downsample(LinearOperator):
    """Average pooling by ``factor`` over the last two axes (e.g. 8x8 -> 4x4 for factor 2)."""

    factor: int = eqx.field(static=True)

    def __init__(self, in_shape, factor: int = 2):
        self.in_shape = _shape(in_shape)
        if len(self.in_shape) < 2 or factor < 1 or any(n % factor for n in self.in_shape[-2:]):
            raise ValueError(
                f"Downsample needs an image shape whose last two axes are divisible by factor={factor}, "
                f"got in_shape={self.in_shape}"
            )
        self.factor = int(factor)

    def apply(self, x):
        *lead, h, w = x.shape
        f = self.factor
        return x.reshape(*lead, h // f, f, w // f, f).mean(axis=(-3, -1))

    def svd(self):
        # Each output averages a disjoint block of f^2 inputs: orthogonal rows of norm 1/f.
        a = self.matrix()
        vt = a * self.factor
        return np.eye(a.shape[0]), np.full(a.shape[0], 1.0 / self.factor), vt


class Blur(LinearOperator):
    """Convolution of the last two axes with ``kernel`` (zero padding, 'same' output size)."""

    kernel: jnp.ndarray

    def __init__(self, in_shape, kernel):
        self.in_shape = _shape(in_shape)
        kernel = jnp.asarray(kernel, dtype=jnp.float32)  # may be traced (a blur width that is a latent)
        if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
            raise ValueError(f"kernel must be a 2-D array with odd sides, got shape {kernel.shape}")
        if len(self.in_shape) < 2:
            raise ValueError(f"Blur needs an image shape with at least two axes, got {self.in_shape}")
        self.kernel = jnp.asarray(kernel)

    @classmethod
    def gaussian(cls, in_shape, size: int = 3, std: float = 1.0) -> "Blur":
        """A ``size`` x ``size`` Gaussian kernel of standard deviation ``std`` pixels, normalised to sum 1;
        ``std`` may be traced (``numpyro.sample("width", ...)`` in a program: blind deblurring)."""
        r = np.arange(size) - size // 2
        k = jnp.exp(-0.5 * jnp.asarray(r[:, None] ** 2 + r[None, :] ** 2, jnp.float32) / jnp.asarray(std) ** 2)
        return cls(in_shape, k / jnp.sum(k))

    def apply(self, x):
        *lead, h, w = x.shape
        flat = x.reshape(-1, h, w)
        out = jax.vmap(lambda im: jax.scipy.signal.convolve2d(im, self.kernel, mode="same"))(flat)
        return out.reshape(*lead, h, w)


class Dense(LinearOperator):
    """A dense matrix acting on flattened x: y = A x.reshape(-1)."""

    A: jnp.ndarray

    def __init__(self, A, in_shape=None):
        A = np.asarray(A, dtype=np.float32)
        if A.ndim != 2:
            raise ValueError(f"A must be a 2-D matrix, got shape {A.shape}")
        self.in_shape = (A.shape[1],) if in_shape is None else _shape(in_shape)
        if math.prod(self.in_shape) != A.shape[1]:
            raise ValueError(f"A has {A.shape[1]} columns but in_shape {self.in_shape} has {math.prod(self.in_shape)} entries")
        self.A = jnp.asarray(A)

    def apply(self, x):
        return self.A @ x.reshape(-1)

    def matrix(self) -> np.ndarray:
        return np.asarray(self.A)
