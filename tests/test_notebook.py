"""notebooks/colab_tpu.ipynb: stored valid and without outputs; off Colab it runs top to bottom on CPU (the tiny
demo run: train at a set mixing ratio, the report table and ROC curves shown inline, the export listed)."""
import base64
import json
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "colab_tpu.ipynb"


def outputs(nb, output_type=None):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if output_type is None or o.output_type == output_type]


def test_notebook_is_valid_and_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not outputs(nb) and all(c.execution_count is None for c in code), "clear the notebook's outputs"
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
    assert nb.metadata.kernelspec.name == "python3"


def test_notebook_runs_off_colab(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # Papermill's way of setting parameters: a cell right after the one tagged "parameters".
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    workdir = tmp_path / "work"
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(f"WORKDIR = {str(workdir)!r}\nMIXING_RATIO = 0.5",
                                                      metadata={"tags": ["injected-parameters"]}))
    # The kernel is this interpreter (so it sees this venv and the environment conftest.py set: 8 simulated CPU
    # devices, which the notebook's subprocesses inherit), named explicitly rather than found on PATH.
    spec = tmp_path / "jupyter" / "kernels" / "this-python"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps(dict(
        argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], display_name="this python",
        language="python")))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    client = NotebookClient(nb, kernel_name="this-python", timeout=600,
                            resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()   # raises CellExecutionError naming the cell on the first error
    finally:
        nbformat.write(nb, tmp_path / "executed.ipynb")   # for a look after a failure
    assert not outputs(nb, "error")

    text = "".join(o.text for o in outputs(nb, "stream"))
    assert "platform cpu, 8 devices" in text
    # --config.data.mixing.value reached the run: half of each batch of 8 is classification rows.
    assert "classification rows per step: 4 of 8 (data.mixing.value=0.5" in text
    assert "before training: mean AUROC" in text and "step 4: mean AUROC" in text

    # The evaluation table, inline: every eval set of configs/demo.py, with its metrics.
    (table,) = [o.data["text/markdown"] for o in outputs(nb, "display_data") if "text/markdown" in o.data]
    assert "| eval set | domain | held out | n |" in table and "| auroc |" in table and "tpr_at_1pct_fpr" in table
    for name in ("chem_harm", "cyber_harm", "cyber_harm_inverted", "control_arena", "covert_reasoning", "imdb"):
        assert f"| {name} |" in table
    # The ROC figure, inline, is the one the run wrote.
    (png,) = [o.data["image/png"] for o in outputs(nb, "display_data") if "image/png" in o.data]
    assert base64.b64decode(png) == (workdir / "eval" / "4" / "roc.png").read_bytes()

    # The export, listed: a Hugging Face directory.
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (workdir / "hf_export" / name).is_file() and f"  {name}\n" in text
    assert json.loads((workdir / "hf_export" / "config.json").read_text())["architectures"]
