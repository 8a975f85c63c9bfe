"""The Python a user is shown runs: every ```python block of README.md, and
examples/quickstart.ipynb executed in a Jupyter kernel (nbclient), on the tests' fake
MNIST (conftest.py's data_dir: 100 training and 30 test images).

Shrunk, and only so: the fake MNIST is too small for the examples' own sizes (a
validation split of 10,000 images, 10,000 training images), so every ``genzoo.train``
of the README, and the notebook's ``settings`` cell, get ``TINY`` on top of what they
say: a 20-image validation split, batches of 16, one hidden layer of 32 units, 2 epochs,
all the training images. Everything else runs as written, sampling and evaluation too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

import genzoo
from genzoo import api

ROOT = Path(__file__).parents[1]
TINY: dict[str, Any] = {
    "val_size": 20,
    "batch_size": 16,
    "hidden": [32],
    "epochs": 2,
    "train_size": None,
}


def readme_python() -> str:
    """The README's ```python blocks, in order, as one script: a block may use the
    names an earlier one made."""
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
    assert blocks, "README.md has no ```python block"
    return "\n".join(blocks)


def test_every_python_block_of_the_readme_runs(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(genzoo, "train", lambda model, **kw: api.train(model, **{**kw, **TINY}))
    exec(compile(readme_python(), "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "test NLL" in out and "--arch is a flag of gan, not vae" in out
    (run,) = (tmp_path / "runs").iterdir()  # where the command puts it
    assert (run / "eval.json").exists() and (run / "report.html").exists()


def tiny_settings_cell(data_dir: Path) -> nbformat.NotebookNode:
    """What the test runs after the notebook's ``parameters`` cell: TINY, and the fake
    MNIST registered in the kernel as conftest.register does in the tests."""
    return nbformat.v4.new_code_cell(
        "import sys\n"
        "from pathlib import Path\n"
        "import pytest\n"
        f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "from conftest import register\n"
        f"register(pytest.MonkeyPatch(), 'mnist', Path({str(data_dir / 'mnist')!r}))\n"
        f"settings.update({TINY!r})"
    )


def widget_views(cell: nbformat.NotebookNode) -> int:
    return sum(
        "application/vnd.jupyter.widget-view+json" in output.get("data", {})
        for output in cell.get("outputs", [])
    )


def test_the_quickstart_notebook_runs(data_dir: Path, tmp_path: Path) -> None:
    notebook = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    (at,) = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
    notebook.cells.insert(at + 1, tiny_settings_cell(data_dir))
    # data_dir set GENZOO_DATA and GENZOO_CACHE in os.environ, which the kernel inherits.
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "eval.json").exists() and (run / "report.html").exists()
    evaluated = next(c for c in notebook.cells if "genzoo.evaluate(" in c.source)
    printed = "".join(output.get("text", "") for output in evaluated.outputs)
    assert "nll" in printed and "importance sampling, K=1000" in printed
    # The progress bars are widgets there (tqdm.auto), not text on stderr.
    assert widget_views(evaluated) >= 1
