"""Hooks of sphinx-gallery (named in conf.py by their import path, which Sphinx can
cache): the examples run in minutes at build time, and no example's global settings
reach the next one."""

from pathlib import Path

# the command line of each example at build time (CPU): fewer epochs and rows than its
# defaults; the grid searches, which fit many times, get the fewest
_ARGV = {
    "digit_retrieval.py": ["--max-epochs", "40", "--n-per-domain", "800"],
    # 90 plain passes (the schedule before max_epochs="auto", which gives these small
    # subsets 1.5-3x the steps): fewer leave them unlearnt (nothing flagged)
    "open_set_detection.py": ["--max-epochs", "90", "--n-per-domain", "1000"],
    "persistence_and_catalogue.py": ["--max-epochs", "20", "--n-per-domain", "400"],
    "your_own_images.py": ["--max-epochs", "90", "--n-per-domain", "500"],
}
_GRID_SEARCH_ARGV = ["--max-epochs", "10", "--n-per-domain", "300"]
_ARGV["label_free_selection.py"] = ["--max-epochs", "45", "--n-per-domain", "1000"]


def quick_argv(gallery_conf, script_vars):
    """The example's command line at build time."""
    return _ARGV.get(Path(script_vars["src_file"]).name, _GRID_SEARCH_ARGV)


def reset_sklearn(gallery_conf, fname):
    """An example may turn on scikit-learn's metadata routing: not for the next one."""
    import sklearn

    sklearn.set_config(enable_metadata_routing=False)
