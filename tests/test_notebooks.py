"""Every notebook under notebooks/ runs from top to bottom without a cell error.

The kernel is always this interpreter (``sys.executable -m ipykernel_launcher``), whatever
kernelspecs the machine has installed: a ``python3`` kernelspec in the user's Jupyter directory,
or one left by another environment, would otherwise run the notebooks with a different Python and
a different (or no) pp_diffusion. Nothing is installed or written outside pytest's temporary
directory; the notebooks in the repository are left as they are.
"""

import sys
from pathlib import Path

import nbclient
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from traitlets import default

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(p for p in NOTEBOOK_DIR.glob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
CELL_TIMEOUT = 300  # seconds per cell


class _ThisInterpreterSpecs(KernelSpecManager):
    """Answers every kernel name with an IPython kernel on the running interpreter."""

    def get_kernel_spec(self, kernel_name):
        return KernelSpec(
            name=kernel_name,
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name=f"Python {sys.version_info[0]} ({sys.executable})",
            language="python",
        )


class _ThisInterpreterKernel(AsyncKernelManager):
    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self):
        return _ThisInterpreterSpecs(parent=self)


def test_notebooks_are_found():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"


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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    # one extra cell at the end reports which interpreter ran the notebook
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        kernel_manager_class=_ThisInterpreterKernel,
        resources={"metadata": {"path": str(path.parent)}},  # run where the notebook lives
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        nbformat.write(nb, tmp_path / path.name)  # the partial run, outputs included, for inspection
        pytest.fail(f"{path.name} failed (partial run saved to {tmp_path / path.name}):\n{err}", pytrace=False)
    stdout = "".join(o.text for o in nb.cells[-1].outputs if o.output_type == "stream" and o.name == "stdout")
    assert Path(stdout.strip()) == Path(sys.executable)
