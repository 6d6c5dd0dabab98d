"""Linear forward operators: adjointness, dense matrices, SVDs, the concrete operators' values, shape errors.

References are independent of the operators' own code: hand-written block means and masks,
scipy.signal.convolve2d, and numpy's SVD.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from pp_diffusion import operators as ops


def _mask(shape, frac, seed):
    rng = np.random.default_rng(seed)
    m = rng.uniform(size=shape) < frac
    m.flat[0] = True
    return m


def _operators():
    rng = np.random.default_rng(0)
    return {
        "inpaint": ops.Inpaint(_mask((5, 4), 0.5, 1)),
        "inpaint_1d": ops.Inpaint(np.array([True, False, True, True, False])),
        "downsample": ops.Downsample((8, 8), 2),
        "downsample_batch_axis": ops.Downsample((2, 6, 6), 3),
        "blur_gaussian": ops.Blur.gaussian((6, 7), size=3, std=0.8),
        "blur_asymmetric": ops.Blur((5, 6), rng.normal(size=(3, 5))),
        "dense": ops.Dense(rng.normal(size=(3, 5))),
        "dense_shaped": ops.Dense(rng.normal(size=(4, 6)), in_shape=(2, 3)),
        "dense_tall": ops.Dense(rng.normal(size=(7, 3))),
    }


OPERATORS = _operators()


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_transpose_is_the_adjoint(name):
    op = OPERATORS[name]
    rng = np.random.default_rng(3)
    for _ in range(3):
        x = rng.normal(size=op.in_shape).astype(np.float32)
        y = rng.normal(size=op.out_shape).astype(np.float32)
        lhs = float(jnp.vdot(op(x), y))
        rhs = float(jnp.vdot(x, op.transpose(y)))
        assert op.transpose(y).shape == op.in_shape
        assert abs(lhs - rhs) <= 1e-5 * (1 + abs(lhs)) + 1e-5


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_matrix_is_consistent_with_apply_and_transpose(name):
    op = OPERATORS[name]
    M = op.matrix()
    d, dy = math.prod(op.in_shape), math.prod(op.out_shape)
    assert M.shape == (dy, d)
    rng = np.random.default_rng(4)
    x = rng.normal(size=op.in_shape)
    y = rng.normal(size=op.out_shape)
    np.testing.assert_allclose(np.asarray(op(x)).reshape(-1), M @ x.reshape(-1), atol=1e-5)
    np.testing.assert_allclose(np.asarray(op.transpose(y)).reshape(-1), M.T @ y.reshape(-1), atol=1e-5)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_svd_reconstructs_the_matrix(name):
    op = OPERATORS[name]
    M = op.matrix()
    u, s, vt = op.svd()
    r = s.shape[0]
    assert u.shape == (M.shape[0], r) and vt.shape == (r, M.shape[1])
    np.testing.assert_allclose((u * s) @ vt, M, atol=1e-5)
    np.testing.assert_allclose(u.T @ u, np.eye(r), atol=1e-5)
    np.testing.assert_allclose(vt @ vt.T, np.eye(r), atol=1e-5)
    # singular values agree with numpy's (closed-form SVDs of masks and pooling included)
    np.testing.assert_allclose(np.sort(s)[::-1], np.linalg.svd(M, compute_uv=False)[:r], atol=1e-5)


def test_inpaint_keeps_the_masked_pixels_in_order():
    mask = np.array([[True, False, True], [False, False, True]])
    op = ops.Inpaint(mask)
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(np.asarray(op(x)), [0.0, 2.0, 5.0])
    assert op.out_shape == (3,)
    # the adjoint puts values back where they came from, zeros elsewhere
    np.testing.assert_array_equal(np.asarray(op.transpose(jnp.array([1.0, 2.0, 3.0]))), [[1, 0, 2], [0, 0, 3]])
    u, s, vt = op.svd()
    np.testing.assert_array_equal(s, np.ones(3))


def test_downsample_8x8_to_4x4_averages_blocks():
    op = ops.Downsample((8, 8), 2)
    assert op.out_shape == (4, 4)
    x = np.random.default_rng(5).normal(size=(8, 8))
    expected = np.array([[x[2 * i:2 * i + 2, 2 * j:2 * j + 2].mean() for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(np.asarray(op(x)), expected, atol=1e-6)
    # each output averages 4 inputs: singular values 1/2, A A^T = I / 4
    _, s, _ = op.svd()
    np.testing.assert_allclose(s, np.full(16, 0.5), atol=1e-7)
    np.testing.assert_allclose(op.matrix() @ op.matrix().T, np.eye(16) / 4, atol=1e-7)
    # a batch of images (leading axes) maps image by image
    xs = np.stack([x, -2 * x])
    np.testing.assert_allclose(np.asarray(op(xs)), np.stack([expected, -2 * expected]), atol=1e-6)


def test_blur_gaussian_kernel_and_values():
    op = ops.Blur.gaussian((6, 6), size=3, std=1.0)
    k = np.asarray(op.kernel)
    r = np.arange(3) - 1
    expected = np.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2))
    np.testing.assert_allclose(k, expected / expected.sum(), rtol=1e-6)
    # a constant image stays constant away from the zero-padded border; the border loses mass
    out = np.asarray(op(np.ones((6, 6))))
    np.testing.assert_allclose(out[1:-1, 1:-1], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[0, 0], k[1:, 1:].sum(), atol=1e-6)
    # a point source spreads into the kernel
    delta = np.zeros((6, 6))
    delta[3, 2] = 1.0
    np.testing.assert_allclose(np.asarray(op(delta))[2:5, 1:4], k, atol=1e-7)


@pytest.mark.parametrize("shape,ksize", [((6, 5), (3, 3)), ((8, 8), (5, 3)), ((7, 6), (1, 5)), ((2, 6, 6), (3, 3))])
def test_blur_is_a_convolution_with_its_kernel(shape, ksize):
    # the docstring promises a convolution (scipy.signal.convolve2d, 'same'), not a correlation:
    # with an asymmetric kernel the two differ
    rng = np.random.default_rng(6)
    k = rng.normal(size=ksize)
    x = rng.normal(size=shape)
    op = ops.Blur(shape, k)
    ref = np.stack([signal.convolve2d(im, k, mode="same") for im in x.reshape(-1, *shape[-2:])]).reshape(shape)
    np.testing.assert_allclose(np.asarray(op(x)), ref, atol=1e-5)


def test_dense_acts_on_flattened_x_and_batches():
    A = np.random.default_rng(7).normal(size=(4, 6))
    op = ops.Dense(A, in_shape=(2, 3))
    x = np.random.default_rng(8).normal(size=(5, 2, 3))
    out = np.asarray(op(x))
    assert out.shape == (5, 4)
    np.testing.assert_allclose(out, x.reshape(5, 6) @ A.T, atol=1e-5)
    np.testing.assert_allclose(op.matrix(), A, atol=1e-7)
    u, s, vt = op.svd()
    np.testing.assert_allclose(s, np.linalg.svd(A, compute_uv=False), atol=1e-5)


def test_operators_work_under_jit_and_grad():
    op = ops.Downsample((4, 4), 2)
    x = jnp.arange(16.0).reshape(4, 4)
    f = jax.jit(lambda v: jnp.sum(op(v) ** 2))
    g = jax.grad(f)(x)
    # d/dx sum(A x)^2 = 2 A^T A x
    np.testing.assert_allclose(np.asarray(g), 2 * np.asarray(op.transpose(op(x))), atol=1e-5)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: ops.Dense(np.ones(3)), "2-D"),
        (lambda: ops.Dense(np.ones((2, 6)), in_shape=(2, 2)), "columns"),
        (lambda: ops.Downsample((7, 8), 2), "divisible"),
        (lambda: ops.Downsample((8,), 2), "image shape"),
        (lambda: ops.Blur((6, 6), np.ones((2, 3))), "odd"),
        (lambda: ops.Blur((6,), np.ones((3, 3))), "two axes"),
        (lambda: ops.Inpaint(np.zeros((3, 3), bool)), "at least one"),
    ],
)
def test_constructor_shape_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "op,bad_x,bad_y",
    [
        (ops.Dense(np.ones((2, 3))), np.ones(4), np.ones(3)),
        (ops.Downsample((4, 4), 2), np.ones((4, 5)), np.ones((4, 4))),
        (ops.Inpaint(np.array([True, False, True])), np.ones(2), np.ones(3)),
    ],
)
def test_apply_and_transpose_reject_wrong_shapes(op, bad_x, bad_y):
    with pytest.raises(ValueError, match="trailing shape"):
        op(bad_x)
    with pytest.raises(ValueError):
        op.transpose(bad_y)


def test_operators_with_equal_settings_share_a_jitted_function():
    # operators are pytrees: two instances with the same mask / factor must compare equal and
    # reuse one compilation (static fields hashable by value), and differ when the mask differs
    f = jax.jit(lambda op, x: op(x))
    x = jnp.arange(9.0).reshape(3, 3)
    mask = np.eye(3, dtype=bool)
    a, b = ops.Inpaint(mask), ops.Inpaint(mask.copy())
    assert a == b and hash(jax.tree_util.tree_structure(a)) == hash(jax.tree_util.tree_structure(b))
    np.testing.assert_array_equal(np.asarray(f(a, x)), [0.0, 4.0, 8.0])
    np.testing.assert_array_equal(np.asarray(f(b, x)), [0.0, 4.0, 8.0])
    c = ops.Inpaint(~mask)
    assert a != c
    np.testing.assert_array_equal(np.asarray(f(c, x)), [1.0, 2.0, 3.0, 5.0, 6.0, 7.0])
    img = jnp.arange(16.0).reshape(4, 4)
    d1, d2 = ops.Downsample((4, 4), 2), ops.Downsample((4, 4), 2)
    assert d1 == d2
    np.testing.assert_allclose(np.asarray(f(d2, img)), [[2.5, 4.5], [10.5, 12.5]])
