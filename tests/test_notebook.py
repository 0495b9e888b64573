"""Execute Subject.ipynb top to bottom with nbclient; any cell error fails the test.

The kernel is the "python3" kernel of this interpreter (jupyter_client starts it with
sys.executable, i.e. the .venv's Python); the setup cell prints the interpreter it runs on, relative
to the repository, and the test checks it. The executed copy is kept in memory: the committed
notebook is not rewritten (tests/test_notebook_outputs.py checks the committed outputs). To refresh
the committed outputs after new weights or benchmark results:

    nice -n 10 .venv/bin/jupyter nbconvert --to notebook --execute --inplace Subject.ipynb
    .venv/bin/python -m pytest tests/test_notebook.py -q        # a few minutes on a CPU
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from test_notebook_outputs import machine_paths, output_text

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "Subject.ipynb"


def outputs_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        data = out.get("data", {})
        parts.append(data.get("text/plain", "") + data.get("text/markdown", ""))
    return "".join(parts)


@pytest.fixture(scope="module")
def executed():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:                   # run from scratch, not from stored outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    # No network: the notebook reads local data and artefacts only; offline mode makes any
    # accidental Hub call fail fast instead of hanging.
    env_backup = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "MPLBACKEND")}
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", MPLBACKEND="module://matplotlib_inline.backend_inline")
    try:
        client = NotebookClient(nb, kernel_name="python3", timeout=600, allow_errors=False,
                                resources={"metadata": {"path": str(ROOT)}})
        try:
            client.execute()
        except CellExecutionError as e:
            pytest.fail(f"Subject.ipynb failed:\n{str(e)[-4000:]}")
    finally:
        for k, v in env_backup.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def test_notebook_runs_top_to_bottom_on_this_interpreter(executed):
    code_cells = [c for c in executed.cells if c.cell_type == "code"]
    assert code_cells and all(c.execution_count for c in code_cells), "every code cell must have run"
    setup = "".join(outputs_text(c) for c in code_cells[:2])      # the result box, then the setup cell
    assert f"python    {os.path.relpath(sys.executable, ROOT)}" in setup, setup[:500]
    errors = [o for c in code_cells for o in c.outputs if o.get("output_type") == "error"]
    assert not errors


def test_no_output_of_a_fresh_run_names_a_path_of_this_machine(executed):
    flagged = [(i, line) for i, c in enumerate(executed.cells) if c.cell_type == "code"
               for out in c.outputs for line in machine_paths(output_text(out))]
    assert not flagged, "\n".join(f"cell {i}: {line}" for i, line in flagged)


# What the notebook prints when it skips its work: "... cells are skipped", "skipped: ...",
# "MISSING  <path>", "<file> is missing: run ...". Not prose such as "the missing sleeves".
SKIPPED_OR_MISSING = re.compile(r"(?i:\bskipped\b|\bis missing\b|\bmissing:)|\bMISSING\b")


def test_notebook_skips_nothing_and_finds_every_file(executed):
    """A cell that catches a failure (a broken import, a missing artefact) and prints that it skipped
    its work leaves the notebook "running" with half its content gone: any such line fails here."""
    flagged = [(i, line.strip()) for i, c in enumerate(executed.cells) if c.cell_type == "code"
               for line in outputs_text(c).splitlines() if SKIPPED_OR_MISSING.search(line)]
    assert not flagged, "\n".join(f"cell {i}: {line[:300]}" for i, line in flagged)


def test_notebook_reads_the_artefacts_it_reports(executed):
    """Numbers in the output come from the files: the accuracy printed equals metrics.json's."""
    import json
    text = "\n".join(outputs_text(c) for c in executed.cells if c.cell_type == "code")
    weights = ROOT / "weights" if (ROOT / "weights" / "model.safetensors").is_file() else ROOT / "outputs" / "smoke"
    metrics = json.loads((weights / "evaluation" / "metrics.json").read_text())
    assert f"Test accuracy {metrics['accuracy']:.2%}" in text
    assert "data: " in text and ("FULL dataset" in text or "SLICE" in text)


def test_every_code_section_is_introduced_by_markdown():
    """Question -> options -> choice -> source comes before the code: each numbered section opens with them."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    sections = [c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## ")]
    assert len(sections) >= 7
    for title in ("The data", "Model choice", "Training choices", "Evaluation", "Interpretation"):
        (section,) = [s for s in sections if title in s.splitlines()[0]]
        for part in ("**Question.**", "**Options", "**Choice.**", "**Source.**"):
            assert part in section, f"section {title!r} lacks {part}"


def test_the_readme_opens_the_notebook_with_the_venvs_jupyter():
    """The README's command opens the notebook with the jupyter installed next to this interpreter
    (requirements-dev.txt), whose python3 kernel is this interpreter with the project's packages
    (jupyter_client starts a kernel whose command is "python" with the server's own interpreter)."""
    from jupyter_client.kernelspec import KernelSpecManager
    assert ".venv/bin/jupyter notebook Subject.ipynb" in (ROOT / "README.md").read_text()
    assert Path(sys.executable).with_name("jupyter-notebook").exists()
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] in ("python", sys.executable) or Path(spec.argv[0]).resolve() == Path(sys.executable).resolve()
