"""pp_diffusion.guidance.classifier_free on networks whose conditional predictions are known exactly,
and the shipped class-conditional digits model: it loads, its labels lower the held-out loss, and
guided draws land nearest their own class mean."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pp_diffusion as ppd
from pp_diffusion import schedules, zoo
from pp_diffusion.guidance import classifier_free


class Affine(eqx.Module):
    """network(x, t, label) = (1 + label) x + t; label ``num_classes`` (the default) is the null class."""

    num_classes: int = eqx.field(static=True, default=3)

    def __call__(self, x, t, label=None):
        label = self.num_classes if label is None else label
        return (1.0 + label) * x + t


def _toy(parameterization="eps"):
    return ppd.DiffusionModel(Affine(), parameterization, schedules.VPCosine(), (4,), name="toy")


X = jnp.linspace(-1.0, 1.0, 4)


@pytest.mark.parametrize("label", [0, 2])
def test_scale_zero_is_unconditional_one_conditional_and_linear_between(label):
    model = _toy()
    t = 0.3
    null, cond = (1.0 + 3) * X + t, (1.0 + label) * X + t
    for w in (0.0, 1.0, 2.5, -0.5):
        guided = classifier_free(model, label, w)
        np.testing.assert_allclose(guided.eps(X, t), null + w * (cond - null), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(classifier_free(model, label, 0.0).eps(X, t), model.eps(X, t), rtol=1e-6)
    np.testing.assert_allclose(classifier_free(model, label, 1.0).eps(X, t), cond, rtol=1e-6)
    assert classifier_free(model, label, 2.0).name == "toy+cfg"


def test_the_combination_is_on_eps_for_an_x0_network():
    """Weights 1 - w and w sum to one, so combining x0 predictions combines the implied eps."""
    model = _toy("x0")
    t = 0.6
    alpha, sigma = model.schedule.alpha(t), model.schedule.sigma(t)
    eps = lambda x0: (X - alpha * x0) / sigma
    null, cond = eps(4.0 * X + t), eps(2.0 * X + t)
    guided = classifier_free(model, 1, 3.0)
    np.testing.assert_allclose(guided.eps(X, t), null + 3.0 * (cond - null), rtol=1e-5, atol=1e-5)


def test_label_and_scale_may_be_traced():
    model = _toy()
    t = 0.5
    f = jax.jit(jax.vmap(lambda c, w: classifier_free(model, c, w).eps(X, t)))
    labels, scales = jnp.array([0, 1, 2]), jnp.array([0.5, 1.0, 2.0])
    expected = [(4.0 + w * (c - 3.0)) * X + t for c, w in zip([0, 1, 2], [0.5, 1.0, 2.0])]
    np.testing.assert_allclose(f(labels, scales), np.stack(expected), rtol=1e-6, atol=1e-6)


def test_nfe_counts_two_network_evaluations_per_call():
    import numpyro
    import numpyro.distributions as dist

    model = _toy()
    guided = classifier_free(model, 1, 2.0)
    assert model.nfe_per_call == 1 and guided.nfe_per_call == 2
    assert ppd.DiffusionPrior(guided, steps=10).nfe == 2 * ppd.DiffusionPrior(model, steps=10).nfe == 20

    def program(y=None):
        x = numpyro.sample("x", ppd.DiffusionPrior(guided, steps=10))
        numpyro.sample("y", dist.Normal(x[0], 1.0), obs=y)

    idata = ppd.infer(program, ppd.smc.bootstrap(8), jax.random.key(0), y=0.5)
    assert np.all(idata.sample_stats["nfe"].values == 2 * 10)  # (1 + 1 * (10 - 1)) calls, 2 evaluations each


def test_errors():
    model = _toy()
    with pytest.raises(ValueError, match=r"label must be in \[0, 3\).*null class"):
        classifier_free(model, 3, 1.0)
    with pytest.raises(ValueError, match=r"label must be in \[0, 3\)"):
        classifier_free(model, -1, 1.0)
    with pytest.raises(ValueError, match="integer scalar"):
        classifier_free(model, 1.5, 1.0)
    with pytest.raises(ValueError, match="integer scalar"):
        classifier_free(model, np.array([0, 1]), 1.0)
    with pytest.raises(ValueError, match="finite real scalar"):
        classifier_free(model, 0, float("nan"))
    with pytest.raises(TypeError, match="DiffusionModel"):
        classifier_free(Affine(), 0, 1.0)
    plain = ppd.DiffusionModel(lambda x, t: x, "eps", schedules.VPCosine(), (4,), name="plain")
    with pytest.raises(ValueError, match="class-conditional model.*'plain'"):
        classifier_free(plain, 0, 1.0)


# --------------------------------------------------------------------------- the shipped model


@pytest.fixture(scope="module")
def model():
    return zoo.load("digits_conditional")


@pytest.fixture(scope="module")
def data():
    return zoo.digits_data()


def test_load_gives_the_unconditional_model(model, data):
    assert "digits_conditional" in zoo.available()
    card = zoo.card("digits_conditional")
    assert card["conditioning"]["num_classes"] == 10 and card["conditioning"]["null_class"] == 10
    assert model.network.num_classes == 10
    assert model.event_shape == (8, 8) and model.parameterization == "eps"
    assert card["num_parameters"] == ppd.networks.num_parameters(model.network)
    x = jnp.asarray(data.x_test[:3])
    out = eqx.filter_jit(lambda m, x: (jax.vmap(m.eps, (0, None))(x, 0.4),
                                       jax.vmap(lambda y: m.network(y, 0.4, 10))(x),
                                       jax.vmap(lambda y: m.network(y, 0.4, 7))(x),
                                       jax.vmap(classifier_free(m, 7, 1.0).eps, (0, None))(x, 0.4)))(model, x)
    # the model clips xhat_0 to the data range [-1, 1] and derives eps from it
    alpha, sigma = model.schedule.alpha(0.4), model.schedule.sigma(0.4)
    clipped = lambda eps: (x - alpha * jnp.clip((x - sigma * eps) / alpha, -1.0, 1.0)) / sigma
    np.testing.assert_allclose(out[0], clipped(out[1]), rtol=1e-5, atol=1e-5)  # as is: the null class
    np.testing.assert_allclose(out[3], clipped(out[2]), rtol=1e-4, atol=1e-4)  # w = 1: the conditional network
    assert not np.allclose(out[2], out[1], atol=1e-3)


def test_load_checks_the_recorded_conditioning(tmp_path, monkeypatch):
    import json
    import shutil

    shutil.copytree(zoo._ZOO_DIR / "digits_conditional", tmp_path / "digits_conditional")
    monkeypatch.setattr(zoo, "_ZOO_DIR", tmp_path)
    meta_file = tmp_path / "digits_conditional" / "model.json"
    meta = json.loads(meta_file.read_text())
    for conditioning in ({"kind": "class", "num_classes": 10, "null_class": 0}, None):
        changed = dict(meta, conditioning=conditioning) if conditioning else {
            k: v for k, v in meta.items() if k != "conditioning"}
        meta_file.write_text(json.dumps(changed))
        with pytest.raises(ValueError, match="conditioning .* does not match the network"):
            zoo.load("digits_conditional")


def test_the_label_lowers_the_held_out_loss(model, data):
    """On test images at mid noise, eps at the true label beats eps at the null class, which beats
    eps at a wrong label (three noise seeds at t = 0.5 on the shipped model: see below)."""
    x0 = jnp.asarray(data.x_test[:200])
    y = jnp.asarray(data.y_test[:200], jnp.int32)
    t = 0.5
    eps = jax.random.normal(jax.random.key(0), x0.shape)
    x_t = model.schedule.alpha(t) * x0 + model.schedule.sigma(t) * eps

    @eqx.filter_jit
    def losses(m):
        one = lambda labels: jnp.mean((jax.vmap(lambda x, c: m.network(x, t, c))(x_t, labels) - eps) ** 2)
        return one(y), one(jnp.full_like(y, 10)), one((y + 5) % 10)

    true, null, wrong = (float(v) for v in losses(model))
    assert true < 0.97 * null < 0.97 * wrong, (true, null, wrong)


def test_guided_draws_land_nearest_their_class_mean(model, data):
    """20 draws per class (w = 2, 50 DDIM steps) classified by the nearest class mean of the training
    images in pixel space. That classifier gets 0.900 of the test images right; the shipped model's
    guided draws score 0.995 at w = 2 and 0.945 at w = 1, and unguided ones (w = 0) 0.085
    (models/digits_conditional/sample.py, seed 0)."""
    means = np.stack([data.x_train[data.y_train == c].mean(0) for c in range(10)]).reshape(10, -1)
    nearest = lambda x: np.argmin(((x.reshape(len(x), 1, -1) - means[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest(data.x_test) == data.y_test) > 0.85

    def draws(m, key):
        def one(label, k):
            prior = ppd.DiffusionPrior(classifier_free(m, label, 2.0), steps=50, eta=0.0)
            return prior.sample(k, (20,))

        return jax.vmap(one)(jnp.arange(10), jax.random.split(key, 10))

    x = np.asarray(eqx.filter_jit(draws)(model, jax.random.key(0)))
    assert x.shape == (10, 20, 8, 8) and np.all(np.isfinite(x))
    accuracy = np.mean(nearest(x.reshape(200, 8, 8)) == np.repeat(np.arange(10), 20))
    assert accuracy >= 0.85, accuracy
