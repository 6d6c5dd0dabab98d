"""notebooks/your_own_model.ipynb runs top to bottom and its figures pass their checks (``_machinery``)."""

from ._machinery import run_notebook


def test_your_own_model_runs(tmp_path):
    run_notebook("your_own_model.ipynb", tmp_path)
