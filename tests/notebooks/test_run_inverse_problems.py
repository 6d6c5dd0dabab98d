"""notebooks/inverse_problems.ipynb runs top to bottom and its figures pass their checks (``_machinery``)."""

from ._machinery import run_notebook


def test_inverse_problems_runs(tmp_path):
    run_notebook("inverse_problems.ipynb", tmp_path)
