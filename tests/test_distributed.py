"""Model selection across processes: GridSearchCV over a dask LocalCluster and over ray,
with one torch thread per worker, gives the scores of a sequential search on one thread
(docs/scale.md)."""

import numpy as np
import pytest
import sklearn
from sklearn.model_selection import GridSearchCV

from skucdr import UniversalCDRRetriever
from skucdr.metrics import make_map_scorer
from skucdr.model_selection import DomainStratifiedKFold

rng = np.random.RandomState(0)
X = rng.rand(96, 3 * 12 * 12).astype(np.float32)
y = np.tile(np.arange(4), 24)
DOMAINS = np.repeat(["a", "b"], 48)


def _search(n_jobs):
    return GridSearchCV(
        UniversalCDRRetriever(n_components=4, max_epochs=2, batch_size=8, device="cpu",
                              image_shape=(3, 12, 12), random_state=0),
        {"tau": [0.07, 0.2]}, scoring=make_map_scorer(),
        cv=DomainStratifiedKFold(n_splits=2, shuffle=True, random_state=0), n_jobs=n_jobs)


def _scores(search):
    return np.array([search.cv_results_[f"split{i}_test_score"] for i in range(2)])


@pytest.fixture(scope="module")
def sequential_on_one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with sklearn.config_context(enable_metadata_routing=True):
            return _scores(_search(1).fit(X, y, sample_domain=DOMAINS))
    finally:
        torch.set_num_threads(threads)


def test_grid_search_over_a_dask_local_cluster(sequential_on_one_thread):
    pytest.importorskip("distributed", reason="dask.distributed (skucdr[distributed]) "
                        "not installed")
    import joblib
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, env={"OMP_NUM_THREADS": "1"}) as cluster, \
            Client(cluster) as client:
        threads = client.run(lambda: __import__("torch").get_num_threads())
        with joblib.parallel_config(backend="dask"), \
                sklearn.config_context(enable_metadata_routing=True):
            search = _search(-1).fit(X, y, sample_domain=DOMAINS)
    assert set(threads.values()) == {1}  # one thread per worker: no oversubscription
    np.testing.assert_array_equal(_scores(search), sequential_on_one_thread)
    assert search.best_estimator_.kneighbors(X[:3], sample_domain=DOMAINS[:3])[1].shape == (3, 5)


def test_grid_search_over_ray(sequential_on_one_thread):
    ray = pytest.importorskip("ray", reason="ray (skucdr[distributed]) not installed")
    import joblib
    from ray.util.joblib import register_ray

    register_ray()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        with joblib.parallel_config(backend="ray"), \
                sklearn.config_context(enable_metadata_routing=True):
            search = _search(-1).fit(X, y, sample_domain=DOMAINS)
    finally:
        ray.shutdown()
    np.testing.assert_array_equal(_scores(search), sequential_on_one_thread)
