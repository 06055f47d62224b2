"""A catalogue of a million rows on one machine: streaming, index="auto", recall, memory.

A UniversalCDRRetriever (``--n-components``-d embeddings, default 64, MLP on 64-d
feature vectors) is fitted on a
small sample of two synthetic domains (clusters of feature vectors; the catalogue domain
is shifted and rescaled). Then:

1. the catalogue of ``--n-gallery`` rows is indexed in chunks of ``--chunk`` rows with
   ``index_gallery(..., append=True)`` (only one chunk of inputs exists at a time);
2. ``--n-queries`` queries of the other domain are searched with ``index="auto"``
   (IVF, see :func:`skucdr.neighbors.auto_index`) and with ``index="Flat"`` (exact);
3. recall@10 of "auto" against exact, both search times (index build reported apart),
   and the peak resident memory of the process are written.

    python benchmarks/million.py --threads 2

Writes ``benchmarks/results/million.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def domain_rows(rng, centers, n, shift, scale, noise=0.8):
    """``n`` feature vectors around random ``centers`` (overlapping clusters: a row's
    nearest neighbours are not all of its cluster), moved by the domain's ``shift``
    and ``scale``; also their cluster ids."""
    labels = rng.randint(len(centers), size=n)
    X = centers[labels] + noise * rng.randn(n, centers.shape[1]).astype(np.float32)
    return (X * scale + shift).astype(np.float32), labels


def _recall(found, exact):
    return float(np.mean([len(np.intersect1d(a, e)) / found.shape[1]
                          for a, e in zip(found, exact)]))


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-gallery", type=int, default=1_000_000)
    parser.add_argument("--n-queries", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-components", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import faiss
    import torch

    from skucdr import UniversalCDRRetriever

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.RandomState(args.seed)
    dim, n_clusters = 64, 2000
    centers = rng.randn(n_clusters, dim).astype(np.float32)
    photo, _ = domain_rows(rng, centers, 4000, 0.0, 1.0)
    catalogue, _ = domain_rows(rng, centers, 4000, 0.5, 1.5)
    start = time.perf_counter()
    retriever = UniversalCDRRetriever(n_components=args.n_components, max_epochs=5,
                                      random_state=0,
                                      device="cpu", index="auto")
    retriever.fit({"photo": photo, "catalogue": catalogue})
    fit_s = time.perf_counter() - start

    start = time.perf_counter()
    first = True
    for begin in range(0, args.n_gallery, args.chunk):
        n = min(args.chunk, args.n_gallery - begin)
        X, _ = domain_rows(rng, centers, n, 0.5, 1.5)
        retriever.index_gallery({"catalogue": X}, append=not first)
        first = False
    index_gallery_s = time.perf_counter() - start
    memory_after_gallery = peak_mib()
    queries, _ = domain_rows(rng, centers, args.n_queries, 0.0, 1.0)
    query_domain = np.full(args.n_queries, "photo")

    timings, raw, found = {}, {}, {}
    for index in ("auto", "Flat"):
        retriever.set_params(index=index)
        start = time.perf_counter()
        retriever.kneighbors(queries[:1], sample_domain=query_domain[:1], n_neighbors=10)
        build_s = time.perf_counter() - start  # the index is built on first use
        start = time.perf_counter()
        _, found[index] = retriever.kneighbors(queries, sample_domain=query_domain,
                                               n_neighbors=10)
        raw[index] = time.perf_counter() - start
        timings[index] = {"build_s": round(build_s, 1), "search_s": round(raw[index], 2)}
        if index == "auto":  # the exact index may push it out of the cache (1 GiB each)
            auto_index = next(built for _, name, _, built in retriever.gallery_.indexes()
                              if name == "auto")
            memory_after_auto = peak_mib()  # indexed and searched with "auto" alone
    recall = _recall(found["auto"], found["Flat"])
    # the nprobe knob on the same IVF index: recall and search time of the index alone
    # (the gallery rows are the index's rows: the catalogue is the only other domain)
    Z = retriever.transform(queries, sample_domain=query_domain)
    sweep = []
    for nprobe in (8, 16, 32, 64, 128, 256):
        auto_index.set_params(nprobe=nprobe)
        start = time.perf_counter()
        _, got = auto_index.search(Z, 10)
        sweep.append({"nprobe": nprobe, "search_s": round(time.perf_counter() - start, 2),
                      "recall_at_10": round(_recall(got, found["Flat"]), 4)})
        print(sweep[-1], flush=True)
    auto_index.set_params(nprobe=None)
    result = {
        "n_gallery": args.n_gallery, "n_queries": args.n_queries, "dim": args.n_components,
        "threads": args.threads, "chunk": args.chunk, "fit_s": round(fit_s, 1),
        "index_gallery_s": round(index_gallery_s, 1),
        "auto_index": auto_index.index_string_,
        "auto_nprobe": auto_index._nprobe(auto_index.index_),
        "auto": timings["auto"], "exact": timings["Flat"],
        "speedup_search": round(raw["Flat"] / raw["auto"], 1),
        "recall_at_10": round(recall, 4),
        "nprobe_sweep": sweep,
        "peak_mib_after_gallery": round(memory_after_gallery),
        "peak_mib_after_auto": round(memory_after_auto),
        "peak_mib": round(peak_mib()),
        "gallery_embedding_mib": round(retriever.gallery_embedding_.nbytes / 2**20),
    }
    print(json.dumps(result, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "million.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "million.md").write_text(
        f"| gallery | index | build (s) | search {args.n_queries} queries (s) | recall@10 |\n"
        "|---|---|---:|---:|---:|\n"
        f"| {args.n_gallery:,} x {args.n_components} | auto: {result['auto_index']}, nprobe "
        f"{result['auto_nprobe']} | {timings['auto']['build_s']} | "
        f"{timings['auto']['search_s']} | {result['recall_at_10']} |\n"
        f"| {args.n_gallery:,} x {args.n_components} | Flat (exact) | "
        f"{timings['Flat']['build_s']} | "
        f"{timings['Flat']['search_s']} | 1 |\n\n"
        f"Search {result['speedup_search']}x faster than exact. Catalogue indexed in chunks "
        f"of {args.chunk:,} (index_gallery(append=True)) in {result['index_gallery_s']} s. "
        f"Peak resident memory {result['peak_mib']} MiB (gallery embeddings "
        f"{result['gallery_embedding_mib']} MiB; the exact index holds one normalised copy "
        "of the rows, the IVF index a normalised copy and faiss's inverted lists; peak "
        f"{result['peak_mib_after_auto']} MiB before the exact search)."
        f" {args.threads} threads.\n\n"
        "The `nprobe` knob on the same index (`index_params={\"nprobe\": ...}`), search "
        "alone:\n\n| nprobe | search (s) | recall@10 |\n|---:|---:|---:|\n"
        + "".join(f"| {r['nprobe']} | {r['search_s']} | {r['recall_at_10']} |\n"
                  for r in sweep))


if __name__ == "__main__":
    main()
