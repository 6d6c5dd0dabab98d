"""The distilled energy models of the zoo (``digits_energy``, ``digits_conditional_energy``): they load as energy-parameterised
DiffusionModels with their checksum checked, the energy is a scalar whose negative gradient is the
model's score, and the energy's score stays as close to the teacher's as its model card says."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pp_diffusion as ppd
from pp_diffusion import networks, schedules, zoo

NAME = "digits_energy"


@pytest.fixture(scope="module")
def model():
    return zoo.load(NAME)


@pytest.fixture(scope="module")
def data():
    return zoo.digits_data()


def test_loads_as_an_energy_model_with_the_teachers_settings(model):
    card, teacher = zoo.card(NAME), zoo.card(card_teacher := zoo.card(NAME)["teacher"]["name"])
    assert card_teacher == "digits"
    assert isinstance(model, ppd.DiffusionModel) and model.name == NAME
    assert model.parameterization == "energy"
    assert isinstance(model.network, networks.EnergyUNet) and model.network.num_classes is None
    assert isinstance(model.schedule, schedules.VPCosine)
    assert card["schedule"] == teacher["schedule"] and card["network"]["config"] == teacher["network"]["config"]
    assert model.data_var == teacher["data_var"] and model.t_start == teacher["t_start"] == 0.95
    assert model.data_range == tuple(teacher["data_range"]) == (-1.0, 1.0)
    assert card["num_parameters"] == networks.num_parameters(model.network)
    # the network is rebuilt from model.json alone
    assert zoo.build_network(card["network"], jax.random.key(1)).config() == model.network.config()


def test_a_corrupted_checkpoint_fails_its_checksum(tmp_path, monkeypatch):
    shutil.copytree(zoo._ZOO_DIR / NAME, tmp_path / NAME)
    monkeypatch.setattr(zoo, "_ZOO_DIR", tmp_path)
    weights = tmp_path / NAME / "weights.eqx"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    weights.write_bytes(bytes(raw))
    with pytest.raises(zoo.ChecksumError, match="checksum mismatch"):
        zoo.load(NAME)


def test_energy_is_a_scalar_and_its_negative_gradient_is_the_score(model, data):
    x0 = jnp.asarray(data.x_test[:8])
    t = 0.6
    sched = model.schedule
    x = sched.alpha(t) * x0 + sched.sigma(t) * jax.random.normal(jax.random.key(0), x0.shape)
    assert jax.eval_shape(model.energy, x[0], t).shape == ()
    unclipped = ppd.DiffusionModel(model.network, "energy", sched, model.event_shape)
    # one compiled function for the three (eager evaluation of a U-Net's gradient is slow)
    minus_grad, raw_score, score = jax.jit(jax.vmap(lambda y: (-jax.grad(model.energy)(y, t), unclipped.score(y, t),
                                                              model.score(y, t))))(x)
    np.testing.assert_allclose(minus_grad, raw_score, rtol=1e-5, atol=1e-5)
    # the shipped model clips xhat_0 = (x + sigma^2 (-grad E)) / alpha to [-1, 1] and takes its score from that
    alpha, sigma = sched.alpha(t), sched.sigma(t)
    x0_hat = jnp.clip((x + sigma ** 2 * minus_grad) / alpha, -1.0, 1.0)
    np.testing.assert_allclose(score, (alpha * x0_hat - x) / sigma ** 2, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", [NAME, "digits_conditional_energy"])
def test_the_energys_score_is_as_close_to_the_teachers_as_the_card_says(name, data):
    """On 30 noised test images (the null class for the conditional model), not the 360 x 3 draws of the card;
    one compilation for both times."""
    model = zoo.load(name)
    card = zoo.card(name)
    teacher = zoo.load(card["teacher"]["name"])
    x0 = jnp.asarray(data.x_test[::12])
    sched = model.schedule

    @jax.jit
    def gap(t):
        sigma = sched.sigma(t)
        x = sched.alpha(t) * x0 + sigma * jax.random.normal(jax.random.key(1), x0.shape)
        s_teacher, s_energy = jax.vmap(lambda y: (-teacher.network(y, t) / sigma, -jax.grad(model.energy)(y, t)))(x)
        return jnp.linalg.norm(s_energy - s_teacher) / jnp.linalg.norm(s_teacher)

    for t in (0.2, 0.8):
        card_gap = card["evaluation"]["relative_gap"][f"{t:g}"]
        # the teacher-weights start of the energy is at 0.30 (t = 0.2) and 0.11 (t = 0.8)
        assert float(gap(t)) < 1.25 * card_gap + 0.01, (name, t, float(gap(t)), card_gap)


@pytest.mark.slow  # 5 U-Net graphs in one compilation
def test_the_conditional_energy_has_a_null_class_and_guides():
    name = "digits_conditional_energy"
    model, card = zoo.load(name), zoo.card(name)
    assert model.parameterization == "energy" and card["teacher"]["name"] == "digits_conditional"
    assert model.network.num_classes == 10 and card["conditioning"] == zoo.card("digits_conditional")["conditioning"]
    x, t = jnp.asarray(zoo.digits_data().x_test[3]), 0.5
    net = model.network
    guided = ppd.guidance.classifier_free(model, label=3, scale=2.0)
    manual = lambda y: net(y, t) + 2.0 * (net(y, t, 3) - net(y, t))
    unclipped = ppd.DiffusionModel(guided.network, "energy", model.schedule, model.event_shape)
    e3, e_null, e10, e_guided, e_manual, s_guided, s_manual = jax.jit(lambda y: (
        net(y, t, 3), net(y, t), net(y, t, 10), guided.energy(y, t), manual(y), unclipped.score(y, t),
        -jax.grad(manual)(y)))(x)
    assert e3.shape == () and float(e_null) == float(e10) and float(e3) != float(e_null)
    # classifier-free guidance of an energy: the guided energy is E_null + w (E_c - E_null), its score -grad of it
    np.testing.assert_allclose(e_guided, e_manual, rtol=1e-5)
    np.testing.assert_allclose(s_guided, s_manual, rtol=1e-4, atol=1e-4)
