"""The progress bar: nothing compiled in when off, a bounded number of host callbacks when on, a bar
that starts at the first step (after compilation), and plain lines when stderr is not a terminal."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest

import pp_diffusion as ppd
from pp_diffusion import _progress
from pp_diffusion.integrators import integrate


@pytest.fixture(scope="module")
def prior():
    mixture = ppd.GaussianMixture(np.ones(2), np.array([[-2.0], [2.0]]), np.full(2, 0.25))
    return ppd.DiffusionPrior(mixture.diffusion_model(ppd.schedules.VPLinear()), steps=40)


def _jaxpr(prior, enabled: bool) -> str:
    def run(key, x):
        return integrate(key, prior.integrator, prior.model, x, prior.times)[0]

    with _progress.tracing(enabled), _progress.bar(prior.steps, "test", enabled):
        return str(jax.make_jaxpr(run)(jax.random.key(0), jnp.zeros((1,))))


def test_no_callback_is_compiled_when_off(prior):
    assert "callback" not in _jaxpr(prior, False)
    assert "callback" in _jaxpr(prior, True)


def test_a_run_calls_back_a_bounded_number_of_times(monkeypatch, prior):
    seen = []
    monkeypatch.setattr(_progress, "_advance", seen.append)
    monkeypatch.setattr(_progress, "_interactive", lambda: False)

    def program():
        numpyro.sample("x", prior)

    ppd.infer(program, ppd.smc.bootstrap(8), jax.random.key(0), num_chains=3, progress_bar=True)
    done = sorted(int(i) + 1 for i in seen)
    assert len(done) <= _progress.MAX_CALLBACKS + 1 and done[-1] == prior.steps, done  # the last step reports
    seen.clear()
    ppd.infer(program, ppd.smc.bootstrap(8), jax.random.key(0), num_chains=3, progress_bar=False)
    assert seen == []


def test_the_bar_starts_at_the_first_step(monkeypatch):
    """Nothing is drawn while the run compiles: the tqdm bar is made at the first callback, counting
    from the steps done by then, so its rate and ETA leave compilation out."""
    import tqdm.auto

    made = []

    class Recording(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            made.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    monkeypatch.setattr(_progress, "_interactive", lambda: True)
    with _progress.bar(100, "test", True) as run:
        assert made == [] and run.start is None
        _progress._advance(np.int32(9))
        assert len(made) == 1 and made[0]["initial"] == 10 and made[0]["total"] == 100
        _progress._advance(np.int32(99))
        _progress._advance(np.int32(49))  # late: never moves the bar back
        assert run.bar.n == 100


def test_plain_lines_without_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(_progress, "_interactive", lambda: False)
    monkeypatch.setattr(_progress, "DELAY", 0.0)
    with _progress.bar(100, "twisted", True):
        for done in range(10, 101, 10):
            _progress._advance(np.int32(done - 1))
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 9 and lines[-1].startswith("twisted: step 100/100 (100%) after "), lines
    assert "s left" in lines[0]


def test_short_runs_write_nothing_without_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(_progress, "_interactive", lambda: False)
    with _progress.bar(100, "twisted", True):
        for done in range(10, 101, 10):
            _progress._advance(np.int32(done - 1))
    assert capsys.readouterr().err == ""
