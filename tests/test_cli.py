import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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


# ------------------------------------------------- your own folders, through the command
def _write_folders(root, labelled, n_per_class=6):
    """Two domains of 12x12 PNGs, a bar whose position is the class; the second tinted."""
    from PIL import Image

    rng = np.random.RandomState(0)
    for domain, tint in (("photos", 0), ("sketches", 90)):
        for c in range(3):
            folder = root / domain / f"class{c}" if labelled else root / domain
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                pixels = (rng.rand(12, 12, 3) * 40).astype(np.uint8)
                pixels[2 + 3 * c: 4 + 3 * c, 2:10] = 220
                pixels[..., 0] = np.clip(pixels[..., 0].astype(int) + tint, 0, 255)
                Image.fromarray(pixels).save(folder / f"c{c}_{i}.png")
    return root


def _run(*argv):
    """``python -m skucdr.cli ARGS`` in a subprocess: the command as users run it."""
    return subprocess.run([sys.executable, "-m", "skucdr.cli", *map(str, argv)],
                          capture_output=True, text=True)


FIT = ("--image-size", "12", "--max-epochs", "2", "--quiet", "--device", "cpu")


def test_fit_query_index_evaluate_on_unlabeled_and_labelled_folders(tmp_path):
    pytest.importorskip("PIL")
    unlabeled = _write_folders(tmp_path / "unlabeled", labelled=False)
    model = tmp_path / "model"
    fitted = _run("fit", unlabeled, "--domains", "photos", "sketches", "--out", model, *FIT)
    assert fitted.returncode == 0, fitted.stderr
    assert "photos (18 images), sketches (18 images)" in fitted.stdout and (model / "weights.pt").is_file()

    queries = sorted((unlabeled / "photos").glob("c1_*.png"))[:2]
    figure = tmp_path / "hits.png"
    found = _run("query", model, *queries, "--query-domain", "photos", "-k", "3",
                 "--figure", figure)
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    hits = [ln.split() for ln in lines if ln.startswith("   ")]
    assert len(hits) == 6 and lines[0] == str(queries[0])
    for rank, distance, path in hits:  # every hit is a file of the other domain
        assert Path(path).is_file() and Path(path).parent.name == "sketches"
    distances = [float(h[1]) for h in hits[:3]]
    assert distances == sorted(distances)
    assert figure.is_file()

    # a catalogue: replace the gallery, then append to it
    catalogue = _write_folders(tmp_path / "catalogue", labelled=False, n_per_class=2)
    assert _run("index", model, catalogue, "--domains", "sketches", "--quiet").returncode == 0
    found = _run("query", model, queries[0], "--query-domain", "photos", "-k", "6")
    paths = [ln.split()[2] for ln in found.stdout.splitlines() if ln.startswith("   ")]
    assert len(paths) == 6 and all(str(catalogue) in p for p in paths)
    appended = _run("index", model, unlabeled, "--domains", "sketches", "--append", "--quiet")
    assert "Gallery of" in appended.stdout and "24 images" in appended.stdout

    labelled = _write_folders(tmp_path / "labelled", labelled=True)
    report = tmp_path / "report.json"
    evaluated = _run("evaluate", model, labelled, "--json", report, "--open-set", "--quiet")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(report.read_text())
    assert {(r["query_domain"], r["gallery_domain"]) for r in result["directions"]} == {
        ("photos", "sketches"), ("sketches", "photos")}
    assert all(0 <= r["map_all"] <= 1 for r in result["directions"])
    assert result["class_names"] == ["class0", "class1", "class2"]
    assert len(result["open_set"]) == 2 and all(r["n_private"] == 0 for r in result["open_set"])


def test_fit_reads_small_images_at_their_own_size(tmp_path):
    """Without --image-size the small CNN reads a folder of 12-pixel images at 12 pixels
    (upscaling to 64 would cost time and add nothing), and says so."""
    pytest.importorskip("PIL")
    folders = _write_folders(tmp_path / "folders", labelled=False, n_per_class=2)
    model = tmp_path / "model"
    fitted = _run("fit", folders, "--out", model, "--max-epochs", "1", "--quiet",
                  "--device", "cpu")
    assert fitted.returncode == 0, fitted.stderr
    assert "read at 12 x 12 pixels" in fitted.stdout
    assert json.loads((model / "cli.json").read_text())["image_size"] == 12


def test_tpsnet_fits_through_the_command(tmp_path):
    pytest.importorskip("PIL")
    root = _write_folders(tmp_path / "folders", labelled=True, n_per_class=4)
    model = tmp_path / "tpsnet"
    fitted = _run("fit", root, "--out", model, "--method", "tpsnet", "--image-size", "12",
                  "--max-epochs", "3", "--quiet", "--device", "cpu")
    assert fitted.returncode == 0, fitted.stderr
    assert "class folders are not used for training" in fitted.stdout
    assert "TextPhaseRetriever" in fitted.stdout


def test_errors_are_one_line_with_a_non_zero_status(tmp_path):
    pytest.importorskip("PIL")
    unlabeled = _write_folders(tmp_path / "unlabeled", labelled=False, n_per_class=2)
    missing = _run("fit", tmp_path / "nowhere", "--out", tmp_path / "m")
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith("skucdr fit: error: Image folder root")
    assert len(missing.stderr.strip().splitlines()) == 1
    not_a_model = tmp_path / "junk"
    not_a_model.write_bytes(b"junk")
    bad = _run("query", not_a_model, next(unlabeled.rglob("*.png")))
    assert bad.returncode == 2 and "not a skucdr model directory" in bad.stderr
    outside = _run("fit", unlabeled, "--domains", "../unlabeled", "--out", tmp_path / "m")
    assert outside.returncode == 2 and "not a folder name" in outside.stderr
    model = tmp_path / "m"
    not_a_model_dir = _run("fit", unlabeled, "--out", not_a_model, *FIT)
    assert not_a_model_dir.returncode == 2 and "not a skucdr model directory" in \
        not_a_model_dir.stderr
    ckpt = tmp_path / "ckpt"
    assert _run("fit", unlabeled, "--out", model, *FIT, "--checkpoint-dir", ckpt).returncode == 0
    again = _run("fit", unlabeled, "--out", model, *FIT, "--checkpoint-dir", ckpt)
    assert again.returncode == 0 and "Resuming the fit from the checkpoint" in again.stderr
    assert sorted(p.name for p in model.iterdir()) == ["cli.json", "config.json", "weights.pt"]
    unlabeled_eval = _run("evaluate", model, unlabeled)
    assert unlabeled_eval.returncode == 2 and "holds no class folders" in unlabeled_eval.stderr
    bad_k = _run("query", model, next(unlabeled.rglob("*.png")), "-k", "0")
    assert bad_k.returncode == 2 and "positive int" in bad_k.stderr
    version = _run("--version")
    assert version.returncode == 0 and version.stdout.startswith("skucdr ")
    for command in ("fit", "index", "query", "evaluate", "demo"):
        assert _run(command, "--help").returncode == 0


def test_two_appends_at_once_both_land(tmp_path):
    """Writers to one model take its lock: neither append is lost."""
    pytest.importorskip("PIL")
    unlabeled = _write_folders(tmp_path / "unlabeled", labelled=False, n_per_class=2)
    model = tmp_path / "model"
    assert _run("fit", unlabeled, "--out", model, *FIT).returncode == 0
    command = [sys.executable, "-m", "skucdr.cli", "index", str(model), str(unlabeled),
               "--domains", "sketches", "--append", "--quiet"]
    writers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
    gallery = json.loads((model / "cli.json").read_text())["gallery_paths"]
    assert len(gallery) == 12 + 6 + 6  # the fitted images, then both appends
    from skucdr.persistence import load_retriever

    assert len(load_retriever(model).gallery_domain_) == len(gallery)


def test_tampered_model_files_fail_in_one_line(tmp_path):
    import pickle

    pytest.importorskip("PIL")
    unlabeled = _write_folders(tmp_path / "unlabeled", labelled=False, n_per_class=2)
    model = tmp_path / "model"
    assert _run("fit", unlabeled, "--out", model, *FIT).returncode == 0
    query = next(unlabeled.rglob("*.png"))
    unseen = _run("query", model, query, "--query-domain", "paintings")  # warns
    assert unseen.returncode == 0, unseen.stderr
    warned = [ln for ln in unseen.stderr.splitlines() if "not seen in fit" in ln]
    assert len(warned) == 1 and warned[0].startswith("warning: sample_domain holds")
    assert "UserWarning" not in unseen.stderr
    config = json.loads((model / "config.json").read_text())
    config["params"]["batch_size"] = "sixty-four"  # a str where an int belongs
    (model / "config.json").write_text(json.dumps(config))
    edited = _run("query", model, query)
    assert edited.returncode == 2 and "batch_size" in edited.stderr
    assert len(edited.stderr.strip().splitlines()) == 1
    config["params"]["batch_size"] = 64
    (model / "config.json").write_text(json.dumps(config))
    assert _run("query", model, query).returncode == 0
    (model / "weights.pt").write_bytes(pickle.dumps({"module": print}))  # not weights
    pickled = _run("query", model, query)
    assert pickled.returncode == 2, pickled.stderr
    assert "weights.pt is not a skucdr weights file" in pickled.stderr
    assert len(pickled.stderr.strip().splitlines()) == 1


def test_the_demo_figure_shows_one_query_per_class():
    from skucdr.cli.demo import one_query_per_class

    y = np.repeat([3, 1, 2], 4)
    rows = np.arange(12)
    assert one_query_per_class(y, rows).tolist() == [4, 8, 0]  # classes 1, 2, 3


def test_fit_with_a_frozen_pretrained_backbone(tmp_path):
    pytest.importorskip("PIL")
    pytest.importorskip("efficientnet_lite_pytorch",
                        reason="efficientnet-lite-pytorch (skucdr[pretrained]) not installed")
    root = _write_folders(tmp_path / "folders", labelled=False, n_per_class=2)
    model = tmp_path / "lite0"
    fitted = _run("fit", root, "--out", model, "--encoder", "efficientnet_lite0",
                  "--freeze-encoder", "--image-size", "32", "--max-epochs", "2", "--quiet",
                  "--device", "cpu")
    assert fitted.returncode == 0, fitted.stderr
    found = _run("query", model, next((root / "photos").glob("*.png")), "-k", "2",
                 "--query-domain", "photos")
    assert found.returncode == 0, found.stderr
    assert len([ln for ln in found.stdout.splitlines() if ln.startswith("   ")]) == 2
    tpsnet = _run("fit", root, "--out", model, "--method", "tpsnet", "--freeze-encoder")
    assert tpsnet.returncode == 2 and "--method uem" in tpsnet.stderr
