"""The training engine's building blocks: balanced batches, bank rows, row embedding."""

import numpy as np
import pytest
import torch
from torch import nn

from skucdr.nn.training import DomainBalancedBatches, RowObjective, local_row_index


def test_balanced_batches_cover_every_domain_each_step():
    codes = np.array([0] * 10 + [1] * 3)
    batches = DomainBalancedBatches(codes, batch_size=4, generator=torch.Generator().manual_seed(0))
    steps = list(batches)
    assert len(steps) == len(batches) == 3  # ceil(10 / 4)
    for a_rows, b_rows in steps:
        assert len(a_rows) == 4 and len(b_rows) == 3  # the small domain gives all it has
        assert set(codes[a_rows.numpy()]) == {0} and set(codes[b_rows.numpy()]) == {1}
    first_domain = torch.cat([s[0] for s in steps]).tolist()
    # a permutation is used up before a fresh one starts: 8 distinct rows, then a new order
    assert len(set(first_domain[:8])) == 8


def test_balanced_batches_are_seeded():
    codes = np.repeat([0, 1], 20)

    def draw(seed):
        gen = torch.Generator().manual_seed(seed)
        return [torch.cat(step).tolist() for step in DomainBalancedBatches(codes, 8, gen)]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_local_row_index_counts_within_each_domain():
    codes = np.array([1, 0, 1, 1, 0])
    assert local_row_index(codes, 2).tolist() == [0, 0, 1, 2, 1]


class _Rows(RowObjective):
    EMBED_CHUNK = 3

    def __init__(self, X, codes):
        self._init_rows(X, codes, batch_size=2, generator=torch.Generator().manual_seed(0))

    def on_epoch_begin(self, net, epoch):
        pass

    def losses(self, net, batch):
        raise AssertionError("not trained")


def test_an_objective_must_implement_its_abstract_hooks():
    class Incomplete(RowObjective):
        def on_epoch_begin(self, net, epoch):
            pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()


class _Net:
    def __init__(self, module):
        self.module_ = module
        self.device = torch.device("cpu")


def test_embed_rows_chunks_in_eval_mode_and_restores_training():
    X = torch.arange(14, dtype=torch.float32).view(7, 2)
    codes = np.array([0, 0, 1, 1, 0, 1, 0])
    module = nn.Sequential(nn.Linear(2, 2), nn.Dropout(p=0.9))
    module.train()
    seen_modes = []

    def fn(x, c):
        seen_modes.append(module.training)
        return torch.cat([module(x), c[:, None].float()], dim=1)

    out = _Rows(X, codes).embed_rows(_Net(module), fn)
    assert module.training  # restored
    assert seen_modes == [False, False, False]  # 7 rows in chunks of 3, all in eval mode
    with torch.no_grad():
        expected = module.eval()(X)
    assert torch.allclose(out[:, :2], expected)  # no dropout: eval mode, rows in order
    assert out[:, 2].tolist() == codes.tolist()  # every chunk got its own rows' codes


def test_release_drops_rows():
    rows = _Rows(torch.zeros(4, 2), np.array([0, 1, 0, 1]))
    assert rows.n_domains == 2 and len(rows.batches()) == 1  # 2 rows per domain, batch 2
    rows._release_rows()
    assert rows.X is None and rows.generator is None


@pytest.mark.parametrize("batch_size", [1, 5])
def test_balanced_batches_epoch_length(batch_size):
    codes = np.array([0] * 5 + [1] * 2)
    batches = DomainBalancedBatches(codes, batch_size, torch.Generator().manual_seed(0))
    assert len(list(batches)) == -(-5 // batch_size)


@pytest.mark.parametrize("device, gpus, expected", [
    ("auto", 0, "cpu"), ("auto", 1, "cuda"), ("cpu", 0, "cpu"), ("cuda:1", 2, "cuda:1"),
    ("cuda", 0, "not available"), ("cuda:2", 1, "only 1 CUDA"), ("gpu", 1, "not a torch device"),
])
def test_resolve_device(monkeypatch, device, gpus, expected):
    from skucdr.nn.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    if expected in ("cpu", "cuda", "cuda:1"):
        assert resolve_device(device) == expected
    else:
        with pytest.raises(ValueError, match=expected):
            resolve_device(device)


class _Regression(RowObjective):
    """Fit the row sums: a tiny objective for the training engine's tests."""

    def __init__(self, X, codes):
        self._init_rows(X, codes, batch_size=4, generator=torch.Generator().manual_seed(0))
        self.target = X.sum(dim=1, keepdim=True)

    def on_epoch_begin(self, net, epoch):
        pass

    def losses(self, net, batch):
        rows = torch.cat(batch)
        loss = ((net.module_(self.X[rows]) - self.target[rows]) ** 2).mean()
        return {"loss": loss, "loss_mse": loss}

    def after_backward(self, net=None):
        pass


def test_train_objective_uses_foreach_updates_with_the_same_result():
    """Adam's multi-tensor update (foreach, not torch's CPU default) changes no bit."""
    from skucdr.nn.training import train_objective

    X = torch.randn(24, 3, generator=torch.Generator().manual_seed(1))
    codes = np.repeat([0, 1], 12)

    def fit(optimizer):
        torch.manual_seed(0)
        module = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
        net = train_objective(module, _Regression(X, codes), n_samples=24, max_epochs=3,
                              lr=1e-2, device="cpu", verbose=0, optimizer=optimizer,
                              weight_decay=1e-4)
        return net, [p.detach() for p in net.module_.parameters()]

    net, fast = fit(torch.optim.Adam)
    assert net.optimizer_.defaults["foreach"] is True

    class _LoopAdam(torch.optim.Adam):  # no foreach flag: the per-tensor loop
        def __init__(self, params, lr, weight_decay):
            super().__init__(params, lr=lr, weight_decay=weight_decay, foreach=False)

    loop_net, loop = fit(_LoopAdam)
    assert loop_net.optimizer_.defaults["foreach"] is False
    assert all(torch.equal(a, b) for a, b in zip(fast, loop))
    torch.manual_seed(0)
    assert not torch.equal(fast[0], nn.Linear(3, 8).weight)  # it trained


def test_balanced_batches_take_at_least_min_steps_and_revisit_small_domains():
    codes = np.repeat([0, 1], [10, 6])
    gen = torch.Generator().manual_seed(0)
    plain = DomainBalancedBatches(codes, 4, gen)
    longer = DomainBalancedBatches(codes, 4, gen, min_steps=7)
    assert len(plain) == 3 and len(longer) == len(list(longer)) == 7
    first_domain = torch.cat([step[0] for step in longer]).tolist()
    # every row of the larger domain seen twice or more: a small set is cycled, whole
    # permutations at a time
    assert np.bincount(first_domain).min() >= 2
    # a data set already longer than min_steps keeps its own length
    assert len(DomainBalancedBatches(codes, 2, gen, min_steps=3)) == 5
