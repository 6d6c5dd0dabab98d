"""Every notebook is found, has a test file that runs it, and is stored executed."""

from pathlib import Path

import nbformat
import pytest

from ._machinery import NOTEBOOK_CHECKS, NOTEBOOK_DIR, NOTEBOOKS


def test_notebooks_are_found():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"
    assert set(NOTEBOOK_CHECKS) <= {p.name for p in NOTEBOOKS}, "NOTEBOOK_CHECKS names a missing notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_executed(path):
    """The repository keeps each notebook with its outputs, run top to bottom in one session."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    counts = [cell.execution_count for cell in nb.cells if cell.cell_type == "code"]
    assert counts and None not in counts, f"{path.name}: some code cells were never run"
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: cells not run in order: {counts}"
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert not errors, f"{path.name} is stored with errors: {[e.ename for e in errors]}"


def test_every_notebook_has_a_run_test():
    here = Path(__file__).resolve().parent
    missing = [p.name for p in NOTEBOOKS if not (here / f"test_run_{p.stem}.py").is_file()]
    assert not missing, f"notebooks without a tests/notebooks/test_run_<name>.py: {missing}"
