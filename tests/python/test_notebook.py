"""A notebook run with nbclient on the local scheduler: the progress widget, a cluster, tasks,
status and down, as a notebook user does it."""

from __future__ import annotations

from typing import Any, Dict, List

import nbformat
from nbclient import NotebookClient

from conftest import REPO, Home


def outputs(cell: Any) -> List[Dict[str, Any]]:
    return list(cell.get("outputs", []))


def text_of(cell: Any) -> str:
    parts = []
    for out in outputs(cell):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        else:
            parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "".join(parts)


def test_a_notebook_starts_uses_and_ends_a_cluster(home: Home) -> None:
    nb = nbformat.read(REPO / "tests/python/local_cluster.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(home.path)}})
    client.execute()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in cells for o in outputs(c) if o.get("output_type") == "error"]
    assert not errors, errors

    # ipywidgets is installed: the cluster's progress is a live widget.
    start = cells[1]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs(start)), outputs(start)
    assert "Cluster(name='nb1'" in text_of(start)

    assert "squares 285" in text_of(cells[2])
    assert "status READY 1 live" in text_of(cells[3])
    assert "after down False False" in text_of(cells[4])
    # Without ipywidgets: one text output, updated in place to the end state.
    assert text_of(cells[5]).strip() == "text-demo: ready", outputs(cells[5])
    home.assert_no_leftovers()
