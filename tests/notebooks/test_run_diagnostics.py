"""notebooks/diagnostics.ipynb runs top to bottom and its figures pass their checks (``_machinery``)."""

from ._machinery import run_notebook


def test_diagnostics_runs(tmp_path):
    run_notebook("diagnostics.ipynb", tmp_path)
