"""notebooks/energy_composition.ipynb runs top to bottom and its figures pass their checks (``_machinery``)."""

from ._machinery import run_notebook


def test_energy_composition_runs(tmp_path):
    run_notebook("energy_composition.ipynb", tmp_path)
