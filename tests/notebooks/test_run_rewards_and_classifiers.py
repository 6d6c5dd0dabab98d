"""notebooks/rewards_and_classifiers.ipynb runs top to bottom and its figures pass their checks (``_machinery``)."""

from ._machinery import run_notebook


def test_rewards_and_classifiers_runs(tmp_path):
    run_notebook("rewards_and_classifiers.ipynb", tmp_path)
