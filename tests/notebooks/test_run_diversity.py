"""notebooks/diversity.ipynb runs top to bottom and its figures pass their checks (``_machinery``)."""

from ._machinery import run_notebook


def test_diversity_runs(tmp_path):
    run_notebook("diversity.ipynb", tmp_path)
