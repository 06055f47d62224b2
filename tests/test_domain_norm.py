"""DomainBatchNorm: per-domain statistics, shared affine, and the domain_codes context."""

import numpy as np
import pytest
import torch
from torch import nn

from skucdr import TextPhaseRetriever, UniversalCDRRetriever
from skucdr.nn.domain_norm import DomainBatchNorm, convert_domain_batchnorm, domain_codes


def _two_domain_batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(12, 3, 4, 4, generator=gen)
    x[6:] = x[6:] * 3 + 5  # the second domain: another offset and scale
    codes = torch.tensor([0] * 6 + [1] * 6)
    return x, codes


def test_training_normalises_each_domain_with_its_own_statistics():
    x, codes = _two_domain_batch()
    layer = DomainBatchNorm(3, n_domains=2)
    with domain_codes(layer, codes):
        out = layer(x)
    for d in (0, 1):
        part = out[codes == d]
        torch.testing.assert_close(part.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
        torch.testing.assert_close(part.var(dim=(0, 2, 3), unbiased=False), torch.ones(3),
                                   atol=1e-4, rtol=0)
        # the domain's running statistics move exactly as a BatchNorm2d's on its rows alone
        reference = nn.BatchNorm2d(3)
        reference(x[codes == d])
        torch.testing.assert_close(layer.running_mean[d], reference.running_mean)
        torch.testing.assert_close(layer.running_var[d], reference.running_var)


def test_training_output_follows_the_rows_in_any_order():
    x, codes = _two_domain_batch()
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    sorted_layer, shuffled_layer = DomainBatchNorm(3, 2), DomainBatchNorm(3, 2)
    with domain_codes(sorted_layer, codes):
        expected = sorted_layer(x)[perm]
    with domain_codes(shuffled_layer, codes[perm]):
        got = shuffled_layer(x[perm])
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(shuffled_layer.running_var, sorted_layer.running_var)


def test_eval_uses_the_row_domain_statistics_and_pooled_ones_for_unknown():
    layer = DomainBatchNorm(2, n_domains=2, affine=False).eval()
    layer.running_mean.copy_(torch.tensor([[0.0, 1.0], [4.0, 3.0]]))
    layer.running_var.copy_(torch.tensor([[1.0, 4.0], [9.0, 1.0]]))
    x = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    with domain_codes(layer, torch.tensor([0, 1, -1])):
        out = layer(x)
    eps = layer.eps
    expected = torch.tensor([[1 / np.sqrt(1 + eps), 0.0],
                             [-3 / np.sqrt(9 + eps), -2 / np.sqrt(1 + eps)]], dtype=torch.float32)
    torch.testing.assert_close(out[:2], expected)
    # pooled over two equally weighted domains: mean of means, mean of variances plus
    # the variance of the means
    mean, var = torch.tensor([2.0, 2.0]), torch.tensor([5.0 + 4.0, 2.5 + 1.0])
    torch.testing.assert_close(out[2], (x[2] - mean) / torch.sqrt(var + eps))
    torch.testing.assert_close(layer(x), out[2].expand(3, -1))  # no codes: pooled


def test_single_row_of_a_domain_uses_running_statistics():
    layer = DomainBatchNorm(3, 2)
    x = torch.randn(5, 3)
    with domain_codes(layer, torch.tensor([0, 0, 0, 0, 1])):
        out = layer(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[4], x[4] / float(np.sqrt(1 + layer.eps)))  # stats 0 / 1
    torch.testing.assert_close(layer.running_mean[1], torch.zeros(3))


def test_gradients_reach_the_shared_affine_parameters():
    x, codes = _two_domain_batch()
    layer = DomainBatchNorm(3, 2)
    with domain_codes(layer, codes):
        (layer(x) * torch.arange(3.0).view(1, 3, 1, 1)).sum().backward()
    assert layer.weight.grad is not None and layer.bias.grad.abs().sum() > 0


def test_domain_codes_must_match_the_batch_and_are_reset():
    layer = DomainBatchNorm(3, 2)
    with domain_codes(layer, torch.tensor([0, 1])):
        with pytest.raises(RuntimeError, match="3 rows but"):
            layer(torch.randn(3, 3))
    assert layer.codes is None


def test_convert_keeps_a_pretrained_batchnorm_function():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Flatten(), nn.Linear(16, 5), nn.BatchNorm1d(5))
    net(torch.randn(8, 3, 4, 4))  # give the layers non-trivial running statistics
    net.eval()
    x = torch.randn(6, 3, 4, 4)
    before = net(x)
    converted = convert_domain_batchnorm(net, n_domains=3)
    layers = [m for m in converted.modules() if isinstance(m, DomainBatchNorm)]
    assert len(layers) == 2 and not any(isinstance(m, nn.BatchNorm2d) for m in converted.modules())
    with domain_codes(converted, torch.tensor([0, 1, 2, -1, 0, 1])):
        torch.testing.assert_close(converted(x), before)


@pytest.fixture(scope="module")
def two_domains():
    rng = np.random.default_rng(0)
    X = rng.random((48, 3, 12, 12), dtype=np.float32)
    X[24:] = 0.3 + 0.5 * X[24:]
    return X, np.repeat(["a", "b"], 24)


@pytest.mark.parametrize("Retriever", [UniversalCDRRetriever, TextPhaseRetriever])
def test_retrievers_embed_each_domain_with_its_statistics(Retriever, two_domains):
    X, domains = two_domains
    params = dict(n_components=8, max_epochs=2, batch_size=8, n_prototypes=3,
                  random_state=0, device="cpu")
    if Retriever is TextPhaseRetriever:  # warm-up, prompt and stage-2 epochs
        params.update(max_epochs=3, prompt_epochs=1)
    model = Retriever(**params).fit(X, sample_domain=domains)
    assert any(isinstance(m, DomainBatchNorm) for m in model.net_.module_.modules())
    as_a = model.transform(X[:4], sample_domain=["a"] * 4)
    as_b = model.transform(X[:4], sample_domain=["b"] * 4)
    assert not np.allclose(as_a, as_b)
    np.testing.assert_allclose(model.gallery_embedding_[:4], as_a, atol=1e-6)

    off = Retriever(domain_norm=False, **params).fit(X, sample_domain=domains)
    assert not any(isinstance(m, DomainBatchNorm) for m in off.net_.module_.modules())
    single = Retriever(**params).fit(X)
    assert not any(isinstance(m, DomainBatchNorm) for m in single.net_.module_.modules())
