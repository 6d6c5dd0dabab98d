"""Reading NumPyro programs: inspection, the log-potential log G(x_0), and the linear-Gaussian structure.

log G is checked against log-likelihoods written out by hand (scipy); the linear-Gaussian structure
against the operators' own matrices. None of these tests runs the reverse chain.
"""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from scipy import stats

import pp_diffusion as ppd
from pp_diffusion import operators
from pp_diffusion.program import (
    feynman_kac,
    inspect_program,
    linear_gaussian_structure,
    log_potential_fn,
    posterior_sites_fn,
)

GMM = ppd.GaussianMixture(np.ones(2), np.array([[-1.0, 0.5], [1.0, -0.5]]), np.array([0.3, 0.6]))
PRIOR = ppd.DiffusionPrior(GMM.diffusion_model(ppd.schedules.ddpm_linear(), "eps"), steps=10)


def _refusing_network(x, t):
    raise AssertionError("inspection must not run the network")


IMAGE_PRIOR = ppd.DiffusionPrior(
    ppd.DiffusionModel(_refusing_network, "eps", ppd.schedules.VPLinear(), (8, 8)), steps=10
)
A = np.array([[1.0, 0.5], [-0.3, 2.0], [0.0, 1.0]])


def basic(y=None, sigma=0.5):
    x = numpyro.sample("x", PRIOR)
    numpyro.deterministic("norm", jnp.sum(x**2))
    numpyro.sample("y", dist.Normal(operators.Dense(A)(x), sigma), obs=y)


def _x(seed=0, shape=(2,)):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


# ---------------------------------------------------------------------------- inspect_program

def test_inspect_program_reads_site_observations_and_deterministics():
    y = np.array([0.1, -0.4, 2.0])
    info = inspect_program(basic, {"y": y})
    assert info.site == "x"
    assert info.prior is PRIOR
    assert set(info.observed) == {"y"}
    np.testing.assert_array_equal(info.observed["y"], y)
    assert info.latent == ()
    assert info.deterministic == ("norm",)


def test_inspect_program_does_not_run_the_chain_and_sees_other_latents():
    def program(y=None):
        x = numpyro.sample("img", IMAGE_PRIOR)
        s = numpyro.sample("s", dist.HalfNormal(1.0))
        numpyro.deterministic("mean", x.mean())
        numpyro.sample("y", dist.Normal(x[0, 0], s), obs=y)
        numpyro.factor("smooth", -jnp.sum(jnp.diff(x, axis=0) ** 2))

    info = inspect_program(program, {"y": 0.3})
    assert info.site == "img" and info.latent == ("s",) and info.deterministic == ("mean",)
    # numpyro.factor is an observed site too: it enters log G
    assert set(info.observed) == {"y", "smooth"}


def test_inspect_program_without_diffusion_site():
    def program(y=None):
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(x, 1.0), obs=y)

    with pytest.raises(ValueError, match="no DiffusionPrior"):
        inspect_program(program, {"y": 1.0})


def test_inspect_program_with_two_diffusion_sites():
    def program():
        numpyro.sample("a", PRIOR)
        numpyro.sample("b", PRIOR)

    with pytest.raises(ValueError, match=r"exactly one.*\['a', 'b'\]"):
        inspect_program(program, {})


def test_inspect_program_with_an_observed_diffusion_site():
    def program(x=None):
        numpyro.sample("x", PRIOR, obs=x)

    with pytest.raises(ValueError, match="'x' is observed"):
        inspect_program(program, {"x": np.zeros(2)})


@pytest.mark.parametrize("bad", [np.zeros(2), np.zeros((3, 1)), np.float32(0.0)])
def test_observation_with_the_wrong_shape_names_the_site(bad):
    with pytest.raises(ValueError, match=r"'y' has shape"):
        inspect_program(basic, {"y": bad})
    # and infer reports it before sampling
    with pytest.raises(ValueError, match=r"'y' has shape"):
        ppd.infer(basic, ppd.smc.bootstrap(8), jax.random.key(0), y=bad)


def test_program_errors_are_reported_as_such():
    with pytest.raises(TypeError, match="callable"):
        inspect_program("not a program", {})
    with pytest.raises(TypeError, match=r"\['z'\]"):
        inspect_program(basic, {"z": 1.0})


def test_extra_latent_site_is_rejected_by_conditioning_samplers():
    def program(y=None):
        x = numpyro.sample("x", PRIOR)
        scale = numpyro.sample("noise_scale", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Normal(x, scale), obs=y)

    data = {"y": np.zeros(2)}
    info = inspect_program(program, data)
    assert info.latent == ("noise_scale",)
    with pytest.raises(ValueError, match="noise_scale"):
        feynman_kac(program, info, data)
    for sampler in (ppd.smc.bootstrap(8), ppd.smc.twisted(8), ppd.smc.mcgdiff(8), ppd.guidance.dps(8)):
        with pytest.raises(ValueError, match="noise_scale"):
            ppd.infer(program, sampler, jax.random.key(0), **data)


def test_feynman_kac_needs_a_stochastic_chain():
    prior = ppd.DiffusionPrior(GMM.diffusion_model(ppd.schedules.ddpm_linear(), "eps"), steps=10, eta=0.0)

    def program(y=None):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(x, 1.0), obs=y)

    data = {"y": np.zeros(2)}
    with pytest.raises(ValueError, match="eta > 0"):
        feynman_kac(program, inspect_program(program, data), data)


# ---------------------------------------------------------------------------- log G

def test_log_potential_equals_the_gaussian_log_likelihood():
    y = np.array([0.1, -0.4, 2.0])
    data = {"y": y, "sigma": 0.7}
    log_g = log_potential_fn(basic, inspect_program(basic, data), data)
    for seed in range(3):
        x = _x(seed)
        expected = stats.norm(A @ np.asarray(x, np.float64), 0.7).logpdf(y).sum()
        assert float(log_g(x)) == pytest.approx(expected, rel=1e-5)
    # jit- and vmap-able, as the samplers use it
    xs = jnp.stack([_x(s) for s in range(3)])
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(log_g))(xs)), [float(log_g(x)) for x in xs], rtol=1e-5)


def test_log_potential_never_evaluates_the_prior_site():
    # GMM prior has an exact log_prob; a program with only the diffusion site has log G = 0
    def program():
        numpyro.sample("x", PRIOR)

    log_g = log_potential_fn(program, inspect_program(program, {}), {})
    assert float(log_g(jnp.array([5.0, -7.0]))) == 0.0


def test_log_potential_honours_scale_mask_and_factor():
    y = np.array([0.3, -1.0])

    def program(y=None):
        x = numpyro.sample("x", PRIOR)
        with handlers.scale(scale=2.5):
            numpyro.sample("y", dist.Normal(x, 0.5), obs=y)
        with handlers.mask(mask=jnp.array([True, False])):
            numpyro.sample("z", dist.Normal(x, 0.1), obs=jnp.array([1.0, 100.0]))
        numpyro.factor("f", -jnp.sum(x) ** 2)
        with handlers.scale(scale=0.5):
            numpyro.factor("g", x[0])

    log_g = log_potential_fn(program, inspect_program(program, {"y": y}), {"y": y})
    for seed in range(3):
        x = np.asarray(_x(seed), np.float64)
        expected = (
            2.5 * stats.norm(x, 0.5).logpdf(y).sum()
            + stats.norm(x[0], 0.1).logpdf(1.0)  # the masked-out entry (100 away) contributes nothing
            - x.sum() ** 2
            + 0.5 * x[0]
        )
        assert float(log_g(jnp.asarray(x, jnp.float32))) == pytest.approx(expected, rel=1e-5)


def test_log_potential_with_a_plate_and_several_observations():
    def program(y=None, c=None):
        x = numpyro.sample("x", PRIOR)
        with numpyro.plate("n", 4):
            numpyro.sample("y", dist.Laplace(x[0], 0.3), obs=y)
        numpyro.sample("c", dist.Bernoulli(logits=3 * x[1]), obs=c)

    data = {"y": np.array([0.1, 0.2, -0.5, 1.0]), "c": np.float32(1.0)}
    log_g = log_potential_fn(program, inspect_program(program, data), data)
    x = np.asarray(_x(4), np.float64)
    expected = stats.laplace(x[0], 0.3).logpdf(data["y"]).sum() + np.log(1 / (1 + np.exp(-3 * x[1])))
    assert float(log_g(jnp.asarray(x, jnp.float32))) == pytest.approx(expected, rel=1e-5)


def test_deterministic_fn_values():
    data = {"y": np.zeros(3)}
    values = posterior_sites_fn(basic, inspect_program(basic, data), data)(jax.random.key(0), jnp.array([3.0, -4.0]))
    assert set(values) == {"norm"} and float(values["norm"]) == pytest.approx(25.0)


# ---------------------------------------------------------------------------- linear-Gaussian structure

def _structure(program, data):
    return linear_gaussian_structure(program, inspect_program(program, data), data)


def _check(lg, A_expected, y_expected, var_expected):
    np.testing.assert_allclose(np.asarray(lg.A), A_expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(lg.y), y_expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(lg.noise_var), var_expected, rtol=1e-5)
    # the whitened SVD is consistent with A and the noise
    w = 1 / np.sqrt(np.asarray(var_expected, np.float64))
    M = (np.asarray(lg.u) * np.asarray(lg.s)) @ np.asarray(lg.vt)
    np.testing.assert_allclose(M, w[:, None] * A_expected, atol=1e-4 * (1 + np.abs(w[:, None] * A_expected).max()))


def test_structure_of_dense_with_offset():
    b = np.array([0.5, -1.0, 2.0])
    y = np.array([1.0, 2.0, 3.0])

    def program(y=None):
        x = numpyro.sample("x", PRIOR)
        numpyro.sample("y", dist.Normal(operators.Dense(A)(x) + b, 0.4), obs=y)

    _check(_structure(program, {"y": y}), A, y - b, np.full(3, 0.16))


def test_structure_of_a_slice_with_per_coordinate_noise_and_to_event():
    sigma = np.array([0.2, 0.9])
    y = np.array([0.3, -0.7])

    def program(y=None):
        x = numpyro.sample("x", PRIOR)
        numpyro.sample("y", dist.Normal(x[:2] * 1.0, sigma).to_event(1), obs=y)

    _check(_structure(program, {"y": y}), np.eye(2), y, sigma**2)


def test_structure_of_inpaint_and_downsample_on_images_and_several_sites():
    mask = np.zeros((8, 8), bool)
    mask[::3, 1::2] = True
    inpaint, down = operators.Inpaint(mask), operators.Downsample((8, 8), 2)
    rng = np.random.default_rng(5)
    y1, y2 = rng.normal(size=mask.sum()), rng.normal(size=(4, 4))

    def program(y1=None, y2=None):
        x = numpyro.sample("x", IMAGE_PRIOR)
        numpyro.sample("y1", dist.Normal(inpaint(x), 0.1), obs=y1)
        numpyro.sample("y2", dist.Normal(down(x) - 1.0, 0.3), obs=y2)

    lg = _structure(program, {"y1": y1, "y2": y2})
    A_expected = np.concatenate([inpaint.matrix(), down.matrix()])
    y_expected = np.concatenate([y1, y2.reshape(-1) + 1.0])
    var_expected = np.concatenate([np.full(mask.sum(), 0.01), np.full(16, 0.09)])
    _check(lg, A_expected, y_expected, var_expected)


NONLINEAR_LOCS = {
    "sin": lambda x: jnp.sin(x),
    "square": lambda x: x**2,
    "product": lambda x: x * x[::-1],
    "clip": lambda x: jnp.clip(x, -1.0, 1.0),
    "relu": lambda x: jax.nn.relu(x),
    "abs": lambda x: jnp.abs(x),
}


@pytest.mark.parametrize("name", sorted(NONLINEAR_LOCS))
def test_structure_is_none_for_a_nonlinear_loc(name):
    fn = NONLINEAR_LOCS[name]

    def program(y=None):
        x = numpyro.sample("x", PRIOR)
        numpyro.sample("y", dist.Normal(fn(x), 0.5), obs=y)

    assert _structure(program, {"y": np.zeros(2)}) is None


def _with_factor(y=None):
    x = numpyro.sample("x", PRIOR)
    numpyro.sample("y", dist.Normal(x, 0.5), obs=y)
    numpyro.factor("f", -jnp.sum(x**2))


def _laplace(y=None):
    x = numpyro.sample("x", PRIOR)
    numpyro.sample("y", dist.Laplace(x, 0.5), obs=y)


def _student(y=None):
    x = numpyro.sample("x", PRIOR)
    numpyro.sample("y", dist.StudentT(4.0, x, 0.5), obs=y)


def _scale_depends_on_x(y=None):
    x = numpyro.sample("x", PRIOR)
    numpyro.sample("y", dist.Normal(x, 0.5 + x**2), obs=y)


def _scaled(y=None):
    x = numpyro.sample("x", PRIOR)
    with handlers.scale(scale=2.0):
        numpyro.sample("y", dist.Normal(x, 0.5), obs=y)


def _masked(y=None):
    x = numpyro.sample("x", PRIOR)
    with handlers.mask(mask=jnp.array([True, False])):
        numpyro.sample("y", dist.Normal(x, 0.5), obs=y)


@pytest.mark.parametrize("program", [_with_factor, _laplace, _student, _scale_depends_on_x],
                         ids=lambda p: p.__name__)
def test_structure_is_none_for_non_gaussian_programs(program):
    assert _structure(program, {"y": np.zeros(2)}) is None


def test_structure_is_none_without_observations():
    def program():
        numpyro.sample("x", PRIOR)

    assert _structure(program, {}) is None


def test_feynman_kac_picks_the_twist_from_the_structure():
    y = np.array([0.1, -0.4, 2.0])
    info = inspect_program(basic, {"y": y})
    fk = feynman_kac(basic, info, {"y": y})
    assert fk.linear_gaussian is not None and fk.all_linear_gaussian and fk.twists == {"y": "linear_gaussian"}
    x = _x(6)
    # the potential's log G is the program's log G
    assert float(fk.potential.log_g(x)) == pytest.approx(float(fk.log_g(x)), rel=1e-5)
    fk2 = feynman_kac(_laplace, inspect_program(_laplace, {"y": np.zeros(2)}), {"y": np.zeros(2)})
    assert fk2.linear_gaussian is None and fk2.twists == {"y": "linearized"}
    # a factor: the tempered look-ahead, log G at x0_hat, with no fixed part
    fk3 = feynman_kac(_with_factor, inspect_program(_with_factor, {"y": np.zeros(2)}), {"y": np.zeros(2)})
    assert fk3.twists == {"y": "linear_gaussian", "f": "tempered"} and not fk3.all_linear_gaussian
    assert float(fk3.potential.lookahead(x * 0.5)) == pytest.approx(-float(jnp.sum((x * 0.5) ** 2)), rel=1e-6)


def test_factor_works_in_a_session_that_imports_pp_diffusion_first():
    """arviz_base registers numpyro as a lazily loaded module; a NumPyro first imported through that stub
    lacked ``numpyro.distributions.distribution``, which ``numpyro.factor`` reads (AttributeError)."""
    code = ("import pp_diffusion, numpyro\n"
            "from numpyro import handlers\n"
            "print(sorted(handlers.trace(lambda: numpyro.factor('f', 1.0)).get_trace()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['f']"
