"""Wall time of the retrievers' fits on MNIST<->MNIST-M, with its baseline in the same run.

Fits, one after the other in one process (so the machine's state is shared):

* UEM for 15 epochs with and without ``domain_norm`` (the ratio is the cost of
  per-domain batch norm);
* the default UniversalCDRRetriever (and with its former ``batch_size=64``: the ratio is
  the cost of the smaller batches) and TextPhaseRetriever.

Each row reports the fit's seconds, the cross-domain mAP@All of the fitted rows embedded
with their ``sample_domain``, and without it (rows of an unknown domain use the pooled
batch-norm statistics of the fitted domains). Run it on an otherwise idle machine.

Usage::

    python benchmarks/fit_time.py --threads 2 --out results/fit_time.json
    python benchmarks/fit_time.py --quick        # the two 15-epoch fits only
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _runs(quick):
    from skucdr import TextPhaseRetriever, UniversalCDRRetriever

    runs = [
        ("uem_15_epochs", lambda: UniversalCDRRetriever(max_epochs=15, random_state=0,
                                                         device="cpu")),
        ("uem_15_epochs_no_domain_norm",
         lambda: UniversalCDRRetriever(max_epochs=15, domain_norm=False, random_state=0,
                                       device="cpu")),
    ]
    if not quick:
        runs += [
            ("uem_default", lambda: UniversalCDRRetriever(random_state=0, device="cpu")),
            # the former default batch size (64 rows per domain, before 2026-12-02)
            ("uem_default_bs64", lambda: UniversalCDRRetriever(batch_size=64, random_state=0,
                                                               device="cpu")),
            ("tpsnet_default", lambda: TextPhaseRetriever(random_state=0, device="cpu")),
        ]
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="the 15-epoch fits only")
    parser.add_argument("--out", default=None, help="JSON file for the rows")
    args = parser.parse_args(argv)

    import torch

    from skucdr import pack_domains
    from skucdr.datasets import load_digit_domains
    from skucdr.metrics import cross_domain_map

    torch.set_num_threads(args.threads)
    data = load_digit_domains(("mnist", "mnist_m"))
    X, y, domains = pack_domains(data)
    rows = {}
    for name, make in _runs(args.quick):
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
        }
        print(name, rows[name], flush=True)
    if "uem_15_epochs_no_domain_norm" in rows:
        ratio = rows["uem_15_epochs"]["seconds"] / rows["uem_15_epochs_no_domain_norm"]["seconds"]
        print(f"domain_norm costs {ratio:.2f}x the fit without it (15 epochs, same run)")
    if "uem_default_bs64" in rows:
        ratio = rows["uem_default"]["seconds"] / rows["uem_default_bs64"]["seconds"]
        print(f"batch_size=32 costs {ratio:.2f}x the fit with batch_size=64 (same run)")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
