"""Runs every notebook here headless (nbclient), in this directory, against the outputs of
`tads demo` in TADS_DEMO_DIR, and checks that the committed notebooks carry no outputs.
Exits non-zero on the first failure. Used by scripts/test.sh:

    TADS_DEMO_DIR=/tmp/demo python notebooks/run.py
"""
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

here = Path(__file__).resolve().parent
books = sorted(here.glob("*.ipynb"))
if not books:
    sys.exit("no notebooks found")
for path in books:
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    if dirty:
        sys.exit(f"{path.name}: cells {dirty} carry outputs; commit notebooks with outputs stripped")
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(here)}})
    client.execute()
    print(f"{path.name}: ran {sum(c.cell_type == 'code' for c in nb.cells)} code cells")
