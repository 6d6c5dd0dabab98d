"""notebooks/tree_sampling.ipynb runs top to bottom and its figures pass their checks (``_machinery``)."""

from ._machinery import run_notebook


def test_tree_sampling_runs(tmp_path):
    run_notebook("tree_sampling.ipynb", tmp_path)
