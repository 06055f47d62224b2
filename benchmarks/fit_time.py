"""Wall time of the retrievers' fits on MNIST<->MNIST-M, with its baseline in the same run.

Fits, one after the other in one process (so the machine's state is shared):

* UEM for 15 epochs with and without ``domain_norm`` (the ratio is the cost of
  per-domain batch norm);
* the default UniversalCDRRetriever and TextPhaseRetriever; UEM also without the random
  convolutions of its default augmentation (their cost), and with Adam's per-tensor
  update loop instead of the multi-tensor (``foreach``) one the fits ask for (the same
  updates to the bit).

Each row reports the fit's seconds, the cross-domain mAP@All of the fitted rows embedded
with their ``sample_domain``, and without it (rows of an unknown domain use the pooled
batch-norm statistics of the fitted domains) and the run it was measured in (its start
time, UTC): ratios are only quoted within a run. ``--runs`` measures some rows again and
keeps the others of ``--out``. Run it on an otherwise idle machine.

Usage::

    python benchmarks/fit_time.py --threads 2 --out results/fit_time.json
    python benchmarks/fit_time.py --quick        # the two 15-epoch fits only
    python benchmarks/fit_time.py --runs uem_default tpsnet_default --out results/fit_time.json
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def _per_tensor_adam():
    """Train with Adam's per-tensor loop (``foreach=False``), the former CPU default."""
    import torch

    from skucdr.nn import training

    class LoopAdam(torch.optim.Adam):  # no foreach parameter: train_objective adds none
        def __init__(self, params, lr=1e-3, weight_decay=0.0):
            super().__init__(params, lr=lr, weight_decay=weight_decay, foreach=False)

    defaults = training.train_objective.__kwdefaults__
    former = defaults["optimizer"]
    defaults["optimizer"] = LoopAdam
    try:
        yield
    finally:
        defaults["optimizer"] = former


class _InContext:
    """An estimator whose ``fit`` runs inside ``context()`` (its other methods as they are)."""

    def __init__(self, estimator, context):
        self.estimator, self.context = estimator, context

    def __getattr__(self, name):
        return getattr(self.estimator, name)

    def fit(self, X, sample_domain):
        with self.context():
            return self.estimator.fit(X, sample_domain=sample_domain)


def _in_context(make, context):
    return lambda: _InContext(make(), context)


def _runs(quick):
    from skucdr import TextPhaseRetriever, UniversalCDRRetriever
    from skucdr.nn.augment import ImageAugment

    runs = [
        # as measured, without random convolutions
        ("uem_15_epochs", lambda: UniversalCDRRetriever(max_epochs=15, augment=ImageAugment(),
                                                         random_state=0, device="cpu")),
        ("uem_15_epochs_no_domain_norm",
         lambda: UniversalCDRRetriever(max_epochs=15, domain_norm=False,
                                       augment=ImageAugment(), random_state=0,
                                       device="cpu")),
    ]
    if not quick:
        runs += [
            ("uem_default", lambda: UniversalCDRRetriever(random_state=0, device="cpu")),
            ("uem_default_no_randconv",
             lambda: UniversalCDRRetriever(augment=ImageAugment(), random_state=0,
                                           device="cpu")),
            ("uem_default_loop_adam",
             _in_context(lambda: UniversalCDRRetriever(random_state=0, device="cpu"),
                         _per_tensor_adam)),
            ("tpsnet_default", lambda: TextPhaseRetriever(random_state=0, device="cpu")),
        ]
    return runs


RATIOS = (  # (row, baseline row, what the ratio is)
    ("uem_15_epochs", "uem_15_epochs_no_domain_norm", "domain_norm (15 epochs)"),
    ("uem_default", "uem_default_no_randconv", "UEM's RandConv against none"),
    ("uem_default", "uem_default_loop_adam", "UEM's foreach Adam against the per-tensor loop"),
    ("tpsnet_default", "uem_default", "TPSNet's default against UEM's"),
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="the 15-epoch fits only")
    parser.add_argument("--out", default=None, help="JSON file for the rows")
    parser.add_argument("--runs", nargs="+", default=None,
                        choices=[name for name, _ in _runs(quick=False)],
                        help="measure these rows only (the others of --out are kept)")
    args = parser.parse_args(argv)

    import torch

    from skucdr import pack_domains
    from skucdr.datasets import load_digit_domains
    from skucdr.metrics import cross_domain_map

    torch.set_num_threads(args.threads)
    data = load_digit_domains(("mnist", "mnist_m"))
    X, y, domains = pack_domains(data)
    out = Path(args.out) if args.out else None
    kept = json.loads(out.read_text()) if out is not None and out.exists() and args.runs else {}
    run = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rows = {}
    for name, make in _runs(args.quick):
        if args.runs and name not in args.runs:
            continue
        start = time.perf_counter()
        model = make().fit(X, sample_domain=domains)
        seconds = time.perf_counter() - start
        rows[name] = {
            "seconds": round(seconds, 1),
            "map_all": round(cross_domain_map(model.transform(X, sample_domain=domains), y,
                                              domains), 3),
            "map_all_without_sample_domain": round(cross_domain_map(model.transform(X), y,
                                                                    domains), 3),
            "threads": args.threads,
            "run": run,
        }
        print(name, rows[name], flush=True)
    for name, baseline, what in RATIOS:
        if name in rows and baseline in rows:  # both measured in this run
            ratio = rows[name]["seconds"] / rows[baseline]["seconds"]
            print(f"{what}: {ratio:.2f}x the fit time (same run)")
    if out is not None:
        out.write_text(json.dumps({**kept, **rows}, indent=1))


if __name__ == "__main__":
    main()
