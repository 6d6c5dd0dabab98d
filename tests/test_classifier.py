"""The zoo's digits classifiers: loading (kinds, checksums), held-out accuracy of the clean one and
of the noise-conditional one across noise levels, features for quality figures, and the training script."""

import json
import shutil

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pp_diffusion import networks, schedules, zoo

NAME = "digits_classifier"


@pytest.fixture(scope="module")
def data():
    return zoo.digits_data()


@pytest.fixture(scope="module")
def clean():
    return zoo.load_classifier(NAME)


@pytest.fixture(scope="module")
def noise_conditional():
    return zoo.load_classifier(NAME, noise_conditional=True)


@eqx.filter_jit
def _logits(net, x, t=None):
    return jax.vmap(net)(x) if t is None else jax.vmap(net)(x, t)


def test_kinds_and_cards():
    assert NAME in zoo.available("classifier") and NAME not in zoo.available()
    assert "digits" in zoo.available() and "digits" not in zoo.available("classifier")
    assert zoo.available(None) == sorted(zoo.available("diffusion") + zoo.available("augmented") + zoo.available("classifier"))
    with pytest.raises(ValueError, match=r"kind must be one of 'diffusion', 'augmented', 'classifier' or None"):
        zoo.available("classifiers")
    with pytest.raises(ValueError, match=r"is a classifier.*zoo.load_classifier\('digits_classifier'\)"):
        zoo.load(NAME)
    with pytest.raises(ValueError, match=r"not a classifier.*zoo.load\('digits'\)"):
        zoo.load_classifier("digits")
    with pytest.raises(ValueError, match="unknown zoo model 'nope'"):
        zoo.load_classifier("nope")
    card = zoo.card(NAME)
    assert card["kind"] == "classifier" and card["schedule"]["class"] == "VPCosine"
    assert set(card["networks"]) == {"clean", "noise_conditional"}
    for entry in card["networks"].values():
        assert (zoo._ZOO_DIR / NAME / entry["weights"]).stat().st_size < 1_000_000


def test_load_classifier_gives_the_networks_of_the_card(clean, noise_conditional, data):
    card = zoo.card(NAME)
    assert isinstance(clean, networks.Classifier) and not clean.time_conditional
    assert isinstance(noise_conditional, networks.Classifier) and noise_conditional.time_conditional
    assert networks.num_parameters(clean) == card["networks"]["clean"]["num_parameters"]
    assert networks.num_parameters(noise_conditional) == card["networks"]["noise_conditional"]["num_parameters"]
    x = jnp.asarray(data.x_test[:4])
    assert _logits(clean, x).shape == (4, 10) and _logits(noise_conditional, x, jnp.full(4, 0.3)).shape == (4, 10)
    feats = eqx.filter_jit(jax.vmap(lambda net, x: net.features(x), (None, 0)))(clean, x)
    # the logits are an affine map of the features
    np.testing.assert_allclose(feats @ clean.linear_out.weight.T + clean.linear_out.bias, _logits(clean, x),
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="clean one"):
        clean(x[0], 0.5)
    with pytest.raises(ValueError, match=r"noise-conditional: call it as classifier\(x_t, t\)"):
        noise_conditional(x[0])


def test_corrupted_classifier_weights_fail_their_checksum(tmp_path, monkeypatch):
    shutil.copytree(zoo._ZOO_DIR / NAME, tmp_path / NAME)
    monkeypatch.setattr(zoo, "_ZOO_DIR", tmp_path)
    assert zoo.available("classifier") == [NAME] and zoo.available() == []
    zoo.load_classifier(NAME)  # an intact copy loads
    for which, noise_conditional in (("clean", False), ("noise_conditional", True)):
        weights = tmp_path / NAME / zoo.card(NAME)["networks"][which]["weights"]
        raw = bytearray(weights.read_bytes())
        raw[len(raw) // 2] ^= 0x01  # one flipped bit
        weights.write_bytes(bytes(raw))
        with pytest.raises(zoo.ChecksumError, match="checksum mismatch"):
            zoo.load_classifier(NAME, noise_conditional=noise_conditional)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        zoo.load_classifier(NAME, noise_conditional=True)


def test_clean_classifier_accuracy(clean, data):
    """On the 360 held-out images (the shipped network: 0.99 or more; the card has the exact figure)."""
    pred = np.asarray(jnp.argmax(_logits(clean, jnp.asarray(data.x_test)), axis=-1))
    acc = float(np.mean(pred == data.y_test))
    assert acc >= 0.95, acc
    assert acc == pytest.approx(zoo.card(NAME)["networks"]["clean"]["test_accuracy"], abs=5e-5)  # card: 4 decimals


def test_noise_conditional_accuracy_falls_to_chance(noise_conditional, data):
    """High at little noise, decreasing with t, near chance (0.1) at t = 1 where x_t is almost pure noise."""
    schedule = schedules.VPCosine()
    x0 = jnp.asarray(np.concatenate([data.x_test, data.x_test]))
    labels = np.concatenate([data.y_test, data.y_test])
    times = [0.1, 0.5, 0.8, 1.0]
    acc = []
    for i, t in enumerate(times):
        eps = jax.random.normal(jax.random.key(i), x0.shape)
        x_t = schedule.alpha(t) * x0 + schedule.sigma(t) * eps
        acc.append(float(np.mean(np.asarray(jnp.argmax(_logits(noise_conditional, x_t, jnp.full(len(x0), t)), -1))
                                 == labels)))
    assert acc[0] > 0.9, acc  # chance is 0.1
    assert acc[0] > acc[1] > acc[2] > acc[3], acc
    assert acc[3] < 0.2, acc  # 720 draws at chance: 0.1 +- 0.011


def test_classifier_rebuilds_from_its_config():
    key = jax.random.key(0)
    for make in (lambda k: networks.Classifier(8, 8, (1, 2), 1, 10, None, key=k),
                 lambda k: networks.Classifier(8, 8, (1, 2, 2), 2, 3, 16, key=k)):
        net = eqx.filter_eval_shape(make, key)
        rebuilt = eqx.filter_eval_shape(zoo.build_network, {"class": "Classifier", "config": net.config()}, key)
        assert jax.tree_util.tree_structure(rebuilt) == jax.tree_util.tree_structure(net)
    with pytest.raises(ValueError, match="unbatched"):
        eqx.filter_eval_shape(lambda k: make(k)(jnp.zeros((2, 8, 8)), 0.5), key)


@pytest.mark.slow
def test_training_script_reproduces_the_clean_accuracy(tmp_path):
    """A 300-step run of models/digits_classifier/train.py reaches the shipped accuracy within noise."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "models" / "digits_classifier" / "train.py"
    if not path.is_file():
        pytest.skip("not a source checkout")
    spec = importlib.util.spec_from_file_location("digits_classifier_train", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--which", "clean", "--steps", "300", "--eval-every", "0", "--no-progress", "--out", str(tmp_path)])
    meta = json.loads((tmp_path / "model.json").read_text())
    entry = meta["networks"]["clean"]
    assert meta["kind"] == "classifier" and entry["sha256"] == zoo.sha256(tmp_path / entry["weights"])
    shipped = zoo.card(NAME)["networks"]["clean"]["test_accuracy"]
    assert entry["test_accuracy"] >= 0.97 and abs(entry["test_accuracy"] - shipped) < 0.02, entry["test_accuracy"]
