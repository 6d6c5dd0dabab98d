"""notebooks/conditioning.ipynb runs top to bottom and its figures pass their checks (``_machinery``)."""

from ._machinery import run_notebook


def test_conditioning_runs(tmp_path):
    run_notebook("conditioning.ipynb", tmp_path)
