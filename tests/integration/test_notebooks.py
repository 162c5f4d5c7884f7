"""The notebooks run top to bottom in a real Jupyter kernel, each on its own fresh Ray.

Their cells assert what they show (typed results, priority order, counts), so a
notebook that runs but shows something wrong fails here.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", ["quickstart.ipynb", "monitoring.ipynb"])
def test_notebook_runs_in_a_real_kernel(name: str, tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    # The kernel is killed once the last cell ran: its graceful shutdown is not what is
    # tested. (Once in make test this test took 5 minutes instead of 15 s, most of them
    # with the kernel idle and its Ray already shut down.)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            shutdown_kernel="immediate",
                            resources={"metadata": {"path": str(NOTEBOOKS.parent)}})
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    nbformat.write(notebook, tmp_path / name)  # the executed copy, for a look if needed
    outputs = [o for cell in notebook.cells if cell.cell_type == "code"
               for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
