"""pp_diffusion.save_model / load_model: a model saved and loaded gives bit-identical outputs, for
the package's networks (rebuilt from the card alone), a foreign Equinox module (with a skeleton), a
plain function wrapped by networks.from_function (with apply= or a skeleton) and a schedule built
from alphas_cumprod; every bad input is refused, before the weights are read, by an error that
names what was expected."""

import json
import math
from pathlib import Path
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pp_diffusion as ppd
from pp_diffusion import _model_io, networks, schedules, zoo

KEY = jax.random.key(0)
TIMES = jnp.asarray([0.02, 0.3, 0.7, 0.99])


def _fill(tree):
    """Deterministic, non-constant values for every array leaf of a shape-only module (cheaper than
    initialising it: each random op of a constructor compiles on CPU)."""
    return jax.tree_util.tree_map(
        lambda a: 0.1 * jnp.sin(jnp.arange(math.prod(a.shape), dtype=a.dtype) + a.ndim).reshape(a.shape), tree)


@eqx.filter_jit
def _run(model, x):
    one = lambda t: (jax.vmap(model.eps, (0, None))(x, t), jax.vmap(model.denoise, (0, None))(x, t))
    return jax.vmap(one)(TIMES)


def _outputs(model):
    """eps and xhat_0 of ``model`` on a fixed batch at several times, under jit (the samplers' path;
    compiled once per network structure, so a loaded model reuses its original's compilation)."""
    x = jnp.sin(jnp.arange(4 * math.prod(model.event_shape), dtype=jnp.float32)).reshape(4, *model.event_shape)
    return _run(model, x)


def _assert_identical(a, b):
    for u, v in zip(_outputs(a), _outputs(b)):
        assert u.dtype == v.dtype
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def _mlp(width=16):
    return _fill(eqx.filter_eval_shape(lambda k: networks.ResidualMLP((2,), width, 2, 8, key=k), KEY))


def _model(network=None, schedule=None, **kwargs):
    network = _mlp() if network is None else network
    return ppd.DiffusionModel(network, "eps", schedules.VPCosine() if schedule is None else schedule, (2,), **kwargs)


class ForeignNet(eqx.Module):
    """An Equinox module this package does not know: needs a skeleton to load."""

    mlp: eqx.nn.MLP
    scale: jax.Array

    def __init__(self, width, *, key):
        self.mlp = eqx.nn.MLP(3, 2, width, 2, key=key)
        self.scale = jnp.full(2, 0.5)

    def __call__(self, x, t):
        return self.scale * self.mlp(jnp.concatenate([x, jnp.reshape(t, (1,))]))


def _apply(params, x, t):
    h = jnp.tanh(params["layers"][0]["w"] @ x + params["layers"][0]["b"] + t)
    return params["layers"][1]["w"] @ h + params["out_bias"]


def _params():
    return {"layers": [{"w": np.linspace(-1, 1, 8).reshape(4, 2), "b": np.zeros(4)},
                       {"w": np.cos(np.arange(8.0)).reshape(2, 4)}], "out_bias": np.array([0.1, -0.2])}


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", ["ResidualMLP", "UNet"])
def test_package_networks_load_from_the_card_alone(tmp_path, kind):
    if kind == "UNet":
        net = _fill(eqx.filter_eval_shape(lambda k: networks.UNet(8, 8, (1, 2), 1, 16, key=k), KEY))
        model = ppd.DiffusionModel(net, "v", schedules.VPLinear(0.2, 15.0), (8, 8), name="tiny_unet",
                                   data_var=0.3, data_range=(-1.0, 1.0), t_start=0.95)
    else:
        model = _model(schedule=schedules.ddpm_linear(), name="mlp", data_var=0.25)
    card = {"data": {"source": "test", "n": 3}, "licence": "CC0"}
    folder = ppd.save_model(model, tmp_path / "saved", card=card)
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "weights.eqx"]
    loaded = ppd.load_model(folder)
    assert type(loaded.network) is type(model.network)
    assert (loaded.name, loaded.parameterization, loaded.event_shape, loaded.data_var, loaded.data_range,
            loaded.t_start) == (model.name, model.parameterization, model.event_shape, model.data_var,
                                model.data_range, model.t_start)
    assert type(loaded.schedule) is type(model.schedule)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool(jnp.all(a == b)),
                                                         loaded.schedule, model.schedule))
    _assert_identical(model, loaded)
    meta = ppd.load_card(folder)
    assert meta["format_version"] == _model_io.FORMAT_VERSION and meta["data"] == card["data"]
    assert meta["licence"] == "CC0" and meta["sha256"] == zoo.sha256(folder / "weights.eqx")
    assert meta["network"]["class"] == kind and meta["num_parameters"] == networks.num_parameters(model.network)
    # the zoo's loader reads the same format, from a path; the model.json path works too
    _assert_identical(model, zoo.load(folder))
    assert ppd.load_model(folder / "model.json", name="renamed").name == "renamed"


def test_a_foreign_module_loads_with_a_skeleton(tmp_path):
    net = ForeignNet(8, key=KEY)
    folder = ppd.save_model(_model(net), tmp_path / "foreign")
    with pytest.raises(ValueError, match=r"class 'test_model_io\.ForeignNet'.*network="):
        ppd.load_model(folder)
    skeleton = eqx.filter_eval_shape(ForeignNet, 8, key=jax.random.key(1))
    loaded = ppd.load_model(folder, network=skeleton)
    assert isinstance(loaded.network, ForeignNet)
    _assert_identical(_model(net), loaded)
    # a concrete module of the same structure is a skeleton too; its own values are replaced
    _assert_identical(_model(net), ppd.load_model(folder, ForeignNet(8, key=jax.random.key(2))))


def test_a_function_network_loads_with_its_function_or_a_skeleton(tmp_path):
    net = networks.from_function(_apply, _params())
    assert isinstance(net, eqx.Module) and all(isinstance(p, jax.Array) for p in jax.tree_util.tree_leaves(net))
    model = _model(net)
    np.testing.assert_array_equal(net(jnp.ones(2), 0.5), _apply(net.params, jnp.ones(2), 0.5))
    folder = ppd.save_model(model, tmp_path / "fn")
    assert ppd.load_card(folder)["network"]["apply"].endswith("_apply")
    loaded = ppd.load_model(folder, apply=_apply)
    assert loaded.network.apply is _apply
    _assert_identical(model, loaded)
    skeleton = networks.from_function(_apply, jax.tree_util.tree_map(np.zeros_like, _params()))
    _assert_identical(model, ppd.load_model(folder, network=skeleton))
    with pytest.raises(ValueError, match="apply="):
        ppd.load_model(folder)
    with pytest.raises(ValueError, match="not both"):
        ppd.load_model(folder, network=skeleton, apply=_apply)


class Params(NamedTuple):
    w: jax.Array
    b: jax.Array


def test_function_params_of_other_pytrees_need_a_skeleton(tmp_path):
    apply = lambda p, x, t: p.w * x + p.b * t
    model = _model(networks.from_function(apply, Params(jnp.arange(2.0), jnp.ones(2))))
    folder = ppd.save_model(model, tmp_path / "nt")
    with pytest.raises(ValueError, match=r"not recorded.*network=ppd\.networks\.from_function"):
        ppd.load_model(folder, apply=apply)
    loaded = ppd.load_model(folder, network=networks.from_function(apply, Params(jnp.zeros(2), jnp.zeros(2))))
    _assert_identical(model, loaded)


def test_apply_is_only_for_function_networks(tmp_path):
    folder = ppd.save_model(_model(), tmp_path / "mlp")
    with pytest.raises(ValueError, match="apply= is for networks saved from ppd.networks.from_function"):
        ppd.load_model(folder, apply=_apply)


def test_from_function_checks_apply():
    with pytest.raises(TypeError, match="apply must be callable"):
        networks.from_function(_params(), _apply)

    class Unhashable:
        __hash__ = None

        def __call__(self, p, x, t):
            return x

    with pytest.raises(TypeError, match="apply must be hashable"):
        networks.from_function(Unhashable(), {})


def test_float64_models_round_trip_and_warn_when_narrowed(tmp_path):
    with jax.enable_x64(True):
        net = networks.from_function(_apply, _params())
        model = _model(net)
        assert net.params["out_bias"].dtype == jnp.float64
        folder = ppd.save_model(model, tmp_path / "f64")
        loaded = ppd.load_model(folder, apply=_apply)
        assert loaded.network.params["out_bias"].dtype == jnp.float64
        _assert_identical(model, loaded)
    with pytest.warns(UserWarning, match="float64 weights, which load as float32.*jax_enable_x64"):
        narrowed = ppd.load_model(folder, apply=_apply)
    assert narrowed.network.params["out_bias"].dtype == jnp.float32
    np.testing.assert_allclose(narrowed.network.params["layers"][1]["w"], np.cos(np.arange(8.0)).reshape(2, 4),
                               rtol=1e-7)


# --------------------------------------------------------------------------- alphas_cumprod schedules


def test_from_alphas_cumprod_reproduces_ddpm_linear_exactly():
    betas = np.linspace(1e-4, 0.02, 1000)
    schedule = schedules.DiscreteVP.from_alphas_cumprod(np.cumprod(1.0 - betas))  # as checkpoints store it
    reference = schedules.ddpm_linear()
    assert schedule.log_alphas.dtype == reference.log_alphas.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(schedule.log_alphas), np.asarray(reference.log_alphas))
    # the schedule's own (float32) alphas_cumprod, back through from_alphas_cumprod: the same schedule up
    # to float32 rounding of alphas_cumprod, an absolute 2^-24 near 1, so 0.5 log of it to 3e-8 (measured 1.4e-8)
    again = schedules.DiscreteVP.from_alphas_cumprod(reference.alphas_cumprod)
    np.testing.assert_allclose(np.asarray(again.log_alphas), np.asarray(reference.log_alphas), rtol=1e-6, atol=3e-8)
    np.testing.assert_allclose(np.asarray(reference.alphas_cumprod), np.cumprod(1.0 - betas), rtol=2e-6)
    t = (np.arange(1000) + 1) / 1000
    np.testing.assert_allclose(np.asarray(schedule.alpha(jnp.asarray(t))) ** 2, np.cumprod(1.0 - betas), rtol=1e-5)


def test_an_alphas_cumprod_schedule_saves_and_loads(tmp_path):
    n = np.arange(1, 201) / 200
    alphas_cumprod = np.cos(0.5 * np.pi * (n + 0.008) / 1.008) ** 2 / np.cos(0.5 * np.pi * 0.008 / 1.008) ** 2
    alphas_cumprod[-1] = max(alphas_cumprod[-1], 1e-5)  # a published cosine table, clipped at the end
    schedule = schedules.DiscreteVP.from_alphas_cumprod(alphas_cumprod)
    model = _model(schedule=schedule)
    loaded = ppd.load_model(ppd.save_model(model, tmp_path / "cos"))
    assert isinstance(loaded.schedule, schedules.DiscreteVP) and loaded.schedule.num_train_steps == 200
    np.testing.assert_array_equal(np.asarray(loaded.schedule.log_alphas), np.asarray(schedule.log_alphas))
    _assert_identical(model, loaded)


@pytest.mark.parametrize("bad, message", [
    (np.ones((3, 2)) * 0.5, "must be a 1-D array of at least 2 values, got shape \\(3, 2\\)"),
    ([0.5], "must be a 1-D array of at least 2 values, got shape \\(1,\\)"),
    ([0.9, np.nan, 0.1], "must be finite; entries \\[1\\]"),
    ([0.9, 0.5, 0.0], "must lie in \\(0, 1\\]; entry 2 is 0.0"),
    ([1.2, 0.5], "must lie in \\(0, 1\\]; entry 0 is 1.2"),
    ([0.9, 0.5, 0.6], "must be non-increasing .*entry 2 \\(0.6\\) exceeds entry 1 \\(0.5\\)"),
    (["a", "b"], "must be a 1-D array of numbers"),
])
def test_from_alphas_cumprod_refuses_bad_input(bad, message):
    with pytest.raises(ValueError, match="alphas_cumprod " + message):
        schedules.DiscreteVP.from_alphas_cumprod(bad)


def test_from_alphas_cumprod_accepts_flat_stretches_and_one():
    schedule = schedules.DiscreteVP.from_alphas_cumprod([1.0, 0.9, 0.9, 0.1])
    np.testing.assert_allclose(np.asarray(schedule.alphas_cumprod), [1.0, 0.9, 0.9, 0.1], rtol=1e-6)


# --------------------------------------------------------------------------- refused inputs


@pytest.fixture
def saved(tmp_path):
    return ppd.save_model(_model(), tmp_path / "model")


def _rewrite(folder, **changes):
    meta = json.loads((folder / "model.json").read_text())
    meta.update(changes)
    (folder / "model.json").write_text(json.dumps(meta))


def test_a_corrupted_weights_file_fails_its_checksum(saved):
    weights = saved / "weights.eqx"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    weights.write_bytes(bytes(raw))
    with pytest.raises(ppd.zoo.ChecksumError, match=r"checksum mismatch for .*weights\.eqx.*save_model"):
        ppd.load_model(saved)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="weights file .* is missing"):
        ppd.load_model(saved)


def test_another_format_version_is_refused_before_the_weights_are_read(saved, monkeypatch):
    _rewrite(saved, format_version=2)
    (saved / "weights.eqx").write_bytes(b"not weights")
    monkeypatch.setattr(_model_io, "sha256", lambda path: pytest.fail("the weights were read"))
    with pytest.raises(ValueError, match="format version 2; this pp_diffusion reads format version 1"):
        ppd.load_model(saved)
    with pytest.raises(ValueError, match="format version 2"):
        ppd.load_card(saved)


def test_a_skeleton_that_does_not_fit_is_refused_before_the_weights_are_read(saved, monkeypatch):
    monkeypatch.setattr(_model_io, "sha256", lambda path: pytest.fail("the weights were read"))
    with pytest.raises(ValueError, match=r"network \(the skeleton\) does not match .* has shape \(32, 8\), "
                                         r"the file \(16, 8\)"):
        ppd.load_model(saved, network=_mlp(width=32))
    with pytest.raises(ValueError, match=r"network \(the skeleton\) does not match .* has 7 array leaves, the file 20"):
        ppd.load_model(saved, network=ForeignNet(8, key=KEY))
    half = jax.tree_util.tree_map(lambda a: a.astype(jnp.float16) if eqx.is_inexact_array(a) else a, _mlp())
    with pytest.raises(ValueError, match="has dtype float16, the file float32"):
        ppd.load_model(saved, network=half)
    # the card's own description is checked the same way
    meta = json.loads((saved / "model.json").read_text())
    _rewrite(saved, network={**meta["network"], "config": {**meta["network"]["config"], "width": 8}})
    with pytest.raises(ValueError, match="the network rebuilt from its card does not match"):
        ppd.load_model(saved)


def test_paths_that_are_not_models(tmp_path, saved):
    with pytest.raises(FileNotFoundError, match="does not exist: expected a folder written by ppd.save_model"):
        ppd.load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a saved model: the folder has no model.json"):
        ppd.load_model(tmp_path / "empty")
    with pytest.raises(ValueError, match="is a file: expected a folder written by ppd.save_model"):
        ppd.load_model(saved / "weights.eqx")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        ppd.load_model(3)
    card = saved / "model.json"
    card.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a model card: it lacks 'network', 'parameterization'"):
        ppd.load_model(saved)
    card.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a model card: expected a JSON object"):
        ppd.load_model(saved)
    card.write_text("{not json")
    with pytest.raises(ValueError, match="not a model card: not valid JSON"):
        ppd.load_card(saved)
    card.write_text(json.dumps({"kind": "classifier", "networks": {}}))
    with pytest.raises(ValueError, match="'classifier' checkpoint, not a diffusion model"):
        ppd.load_model(saved)


def test_save_model_refuses_what_it_cannot_store(tmp_path, saved):
    with pytest.raises(TypeError, match="model must be a pp_diffusion.DiffusionModel"):
        ppd.save_model(_mlp(), tmp_path / "a")
    with pytest.raises(TypeError, match=r"model.network must be an Equinox module.*from_function"):
        ppd.save_model(_model(lambda x, t: x), tmp_path / "a")
    gmm = ppd.GaussianMixture(np.ones(2) / 2, np.array([[1.0, 0.0], [-1.0, 0.0]]), np.full(2, 0.1))
    with pytest.raises(ValueError, match="data_distribution"):
        ppd.save_model(gmm.diffusion_model(schedules.VPCosine(), "eps"), tmp_path / "a")

    class MySchedule(schedules.VPLinear):
        pass

    with pytest.raises(TypeError, match="model.schedule must be one of the schedules"):
        ppd.save_model(_model(schedule=MySchedule()), tmp_path / "a")
    with pytest.raises(ValueError, match="card may not use the keys save_model writes itself: 'sha256'"):
        ppd.save_model(_model(), tmp_path / "a", card={"sha256": "x"})
    with pytest.raises(TypeError, match="card must be JSON-serialisable"):
        ppd.save_model(_model(), tmp_path / "a", card={"x": object()})
    assert not (tmp_path / "a").exists()  # nothing was written by the refused calls
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ppd.save_model(_model(), saved)
    other = _model(_mlp(width=8))
    ppd.save_model(other, saved, overwrite=True)
    _assert_identical(other, ppd.load_model(saved))


def test_zoo_load_points_a_bare_folder_name_to_a_path(tmp_path, monkeypatch):
    ppd.save_model(_model(), tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"unknown zoo model 'mine'.*zoo.load\('./mine'\) or ppd.load_model"):
        zoo.load("mine")
    _assert_identical(_model(), zoo.load("./mine"))
