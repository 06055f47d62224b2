"""Checkpoints: a fit interrupted at any epoch (Ctrl+C, an exception, SIGKILL) resumes
and ends with the embeddings of an uninterrupted fit; checkpoints of other fits are never
used silently."""

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import sklearn
import torch
from sklearn.model_selection import GridSearchCV

from skucdr import TextPhaseRetriever, UniversalCDRRetriever
from skucdr.metrics import make_label_free_scorer
from skucdr.model_selection import DomainStratifiedKFold
from skucdr.nn import checkpoint as checkpoint_module
from skucdr.nn import training

ROOT = Path(__file__).resolve().parents[1]

rng = np.random.RandomState(0)
X = rng.rand(120, 16).astype(np.float32)
DOMAINS = np.repeat(["a", "b"], 60)

# 8 epochs: UEM's stage 2 is epochs 5-7; TPSNet warms up on 0-2, pairs prompts on 3-4
# and trains its stage 2 on 5-7
UEM = dict(n_components=8, batch_size=16, max_epochs=8, alignment="spda", matching="sn2m",
           random_state=0)
TPSNET = dict(n_components=8, batch_size=16, max_epochs=8, prompt_epochs=2,
              image_shape=(1, 4, 4), random_state=0)


def _interrupt_at(monkeypatch, epoch):
    """Make the fit raise KeyboardInterrupt as epoch ``epoch`` (0-based) begins."""
    original = training.ObjectiveEpochHook.on_epoch_begin

    def on_epoch_begin(self, net, **kwargs):
        if len(net.history) - 1 == epoch:
            raise KeyboardInterrupt
        return original(self, net, **kwargs)

    monkeypatch.setattr(training.ObjectiveEpochHook, "on_epoch_begin", on_epoch_begin)


def _embed(est):
    return est.transform(X, sample_domain=DOMAINS)


@pytest.mark.parametrize("cls, params, epoch", [
    (UniversalCDRRetriever, UEM, 2),  # stage 1
    (UniversalCDRRetriever, UEM, 6),  # stage 2, with its frozen copy and banks
    (TextPhaseRetriever, TPSNET, 2),  # warm-up
    (TextPhaseRetriever, TPSNET, 4),  # prompt pairing
    (TextPhaseRetriever, TPSNET, 7),  # stage 2, prompts frozen
])
def test_interrupted_fit_resumes_to_identical_embeddings(cls, params, epoch, tmp_path,
                                                         monkeypatch):
    expected = _embed(cls(**params).fit(X, sample_domain=DOMAINS))
    est = cls(**params, checkpoint_dir=tmp_path)
    with monkeypatch.context() as patch:
        _interrupt_at(patch, epoch)
        with pytest.raises(KeyboardInterrupt):
            est.fit(X, sample_domain=DOMAINS)
    (saved,) = tmp_path.glob("*.pt")
    assert saved.name.startswith(cls.__name__)
    with pytest.warns(UserWarning, match=rf"Resuming .*: {epoch} of 8 epochs were done"):
        est.fit(X, sample_domain=DOMAINS)
    np.testing.assert_array_equal(_embed(est), expected)
    assert len(est.history_) == 8
    assert [row["epoch"] for row in est.history_] == list(range(1, 9))


def test_fit_killed_with_sigkill_resumes(tmp_path):
    """A fit whose process is killed (as a preempted job is) resumes from its last epoch."""
    threads = torch.get_num_threads()
    script = textwrap.dedent(f"""
        import os, signal, sys
        import numpy as np, torch
        torch.set_num_threads({threads})
        sys.path.insert(0, {str(ROOT)!r})
        from skucdr import UniversalCDRRetriever
        from skucdr.nn import checkpoint
        write = checkpoint._write_atomically
        def write_then_die(path, state):
            write(path, state)
            if state["epoch"] == 4:
                os.kill(os.getpid(), signal.SIGKILL)
        checkpoint._write_atomically = write_then_die
        rng = np.random.RandomState(0)
        X = rng.rand(120, 16).astype(np.float32)
        UniversalCDRRetriever(**{UEM!r}, checkpoint_dir={str(tmp_path)!r}).fit(
            X, sample_domain=np.repeat(["a", "b"], 60))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == -9, done.stderr
    expected = _embed(UniversalCDRRetriever(**UEM).fit(X, sample_domain=DOMAINS))
    est = UniversalCDRRetriever(**UEM, checkpoint_dir=tmp_path)
    with pytest.warns(UserWarning, match="4 of 8 epochs were done"):
        est.fit(X, sample_domain=DOMAINS)
    np.testing.assert_array_equal(_embed(est), expected)
    assert not list(tmp_path.glob(".*.tmp"))


def test_other_configuration_or_data_never_uses_a_checkpoint(tmp_path):
    params = dict(UEM, max_epochs=2, alignment=None, matching=None)
    UniversalCDRRetriever(**params, checkpoint_dir=tmp_path).fit(X, sample_domain=DOMAINS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no resume message, no warning at all
        UniversalCDRRetriever(**dict(params, lr=2e-3), checkpoint_dir=tmp_path).fit(
            X, sample_domain=DOMAINS)
        UniversalCDRRetriever(**params, checkpoint_dir=tmp_path).fit(
            X[::-1], sample_domain=DOMAINS)
        UniversalCDRRetriever(**params, checkpoint_dir=tmp_path).fit(
            X, sample_domain=DOMAINS[::-1])
    assert len(list(tmp_path.glob("*.pt"))) == 4


def test_finished_fit_is_returned_from_its_checkpoint(tmp_path):
    params = dict(UEM, max_epochs=3)
    first = UniversalCDRRetriever(**params, checkpoint_dir=tmp_path).fit(
        X, sample_domain=DOMAINS)
    again = UniversalCDRRetriever(**params, checkpoint_dir=tmp_path)
    with pytest.warns(UserWarning, match="3 of 3 epochs were done"):
        again.fit(X, sample_domain=DOMAINS)
    np.testing.assert_array_equal(_embed(again), _embed(first))


def _only_checkpoint(directory):
    (path,) = Path(directory).glob("*.pt")
    return path


def test_foreign_or_broken_checkpoint_is_ignored_with_a_warning(tmp_path):
    params = dict(UEM, max_epochs=2, alignment=None, matching=None)
    expected = _embed(UniversalCDRRetriever(**params, checkpoint_dir=tmp_path).fit(
        X, sample_domain=DOMAINS))
    path = _only_checkpoint(tmp_path)
    state = torch.load(path, weights_only=True)
    for content, message in [
        (dict(state, fingerprint="0" * 32), "another fit configuration"),
        (dict(state, format=checkpoint_module.FORMAT_VERSION + 1), "another skucdr version"),
        (b"not a checkpoint", "unreadable"),
    ]:
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            torch.save(content, path)
        est = UniversalCDRRetriever(**params, checkpoint_dir=tmp_path)
        with pytest.warns(UserWarning, match=message):
            est.fit(X, sample_domain=DOMAINS)
        np.testing.assert_array_equal(_embed(est), expected)  # trained from scratch
    assert torch.load(path, weights_only=True)["fingerprint"] == state["fingerprint"]


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    params = dict(UEM, max_epochs=4, alignment=None, matching=None)
    save = torch.save
    calls = []

    def save_then_interrupt(obj, f, *args, **kwargs):
        calls.append(obj["epoch"])
        if obj["epoch"] == 3:
            f.write(b"half a file")
            raise KeyboardInterrupt
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        UniversalCDRRetriever(**params, checkpoint_dir=tmp_path).fit(X, sample_domain=DOMAINS)
    monkeypatch.undo()
    assert calls == [1, 2, 3]
    assert torch.load(_only_checkpoint(tmp_path), weights_only=True)["epoch"] == 2
    assert not list(tmp_path.glob(".*"))  # the temporary file is gone


def test_checkpoint_needs_picklable_parameters(tmp_path):
    est = UniversalCDRRetriever(**dict(UEM, max_epochs=1), augment=lambda x, g: x,
                                checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="picklable"):
        est.fit(X, sample_domain=DOMAINS)


def test_grid_search_in_parallel_shares_one_directory(tmp_path):
    params = dict(UEM, max_epochs=2, alignment=None, matching=None)
    search = GridSearchCV(
        UniversalCDRRetriever(**params, checkpoint_dir=str(tmp_path)),
        {"lr": [1e-3, 3e-3]},
        scoring=make_label_free_scorer(),
        cv=DomainStratifiedKFold(n_splits=2, shuffle=True, random_state=0),
        n_jobs=2,
    )
    with sklearn.config_context(enable_metadata_routing=True):
        search.fit(X, sample_domain=DOMAINS)
    # 2 candidates x 2 folds, and the refit on all rows: five fits, five files
    assert len(list(tmp_path.glob("*.pt"))) == 5
    assert not list(tmp_path.glob(".*"))
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_checkpoint_is_loaded_without_pickle(tmp_path):
    UniversalCDRRetriever(**dict(UEM, max_epochs=1), checkpoint_dir=tmp_path).fit(
        X, sample_domain=DOMAINS)
    state = torch.load(_only_checkpoint(tmp_path), weights_only=True)  # raises on code
    assert state["epoch"] == 1
