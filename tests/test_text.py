"""Tests of the text prior: text towers and the prompt learner."""

import pytest
import torch

from skucdr.tpsnet.losses import image_to_text_contrastive, text_to_image_contrastive
from skucdr.tpsnet.prompts import PromptLearner
from skucdr.tpsnet.text import (
    BuiltinTextTower,
    OpenCLIPTextTower,
    check_text_tower,
    encode_text,
)


@pytest.fixture(scope="module")
def tower():
    return BuiltinTextTower(width=32, layers=2, heads=4, context_length=12, output_dim=24)


def _prompt_with_words(tower, template, words):
    """The PromptLearner-free reference: encode the prompt with real words for the [X]s."""
    return encode_text(tower, [f"{template} {' '.join(words)}."])[0]


# --- BuiltinTextTower ---------------------------------------------------------------------


def test_builtin_tower_follows_protocol_and_is_frozen(tower):
    assert check_text_tower(tower) is tower
    assert (tower.embed_dim, tower.output_dim, tower.context_length) == (32, 24, 12)
    assert not any(p.requires_grad for p in tower.parameters())
    tower.train()
    assert not tower.training and not any(m.training for m in tower.modules())


def test_builtin_tower_is_deterministic_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = BuiltinTextTower(seed=3), BuiltinTextTower(seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    c = BuiltinTextTower(seed=4)
    texts = ["an image of a sketch.", "a photo of the digit."]
    assert torch.equal(encode_text(a, texts), encode_text(b, texts))
    assert not torch.allclose(encode_text(a, texts), encode_text(c, texts))


def test_builtin_tokenizer(tower):
    ids = tower.tokenize(["An image of a X, zebra."])
    v = tower.vocabulary
    expected = [
        tower.SOT,
        v["an"],
        v["image"],
        v["of"],
        v["a"],
        v["x"],
        tower.UNK,
        tower.UNK,
        v["."],
        tower.EOT,
        tower.PAD,
        tower.PAD,
    ]
    assert ids.dtype == torch.long and ids.tolist() == [expected]
    with pytest.raises(ValueError, match="context_length"):
        tower.tokenize(["a " * 11])
    with pytest.raises(ValueError, match="divide"):
        BuiltinTextTower(width=30, heads=4)


def test_encode_prompts_pools_the_eot_token(tower):
    ids = tower.tokenize(["an image of a sketch."])
    emb = tower.token_embedding(ids)
    feature = tower.encode_prompts(emb, ids)
    # Causal attention + pooling at <eot>: positions after <eot> do not matter ...
    eot = int((ids[0] == tower.EOT).nonzero())
    changed = emb.clone()
    changed[:, eot + 1 :] = torch.randn_like(changed[:, eot + 1 :])
    torch.testing.assert_close(tower.encode_prompts(changed, ids), feature)
    # ... positions before it do.
    changed = emb.clone()
    changed[:, 2] += 0.5
    assert not torch.allclose(tower.encode_prompts(changed, ids), feature)
    with pytest.raises(ValueError, match="context_length"):
        tower.encode_prompts(emb[:, :5], ids[:, :5])


def test_gradients_reach_prompts_not_tower(tower):
    ids = tower.tokenize(["an image of a photo."])
    emb = tower.token_embedding(ids).requires_grad_(True)
    tower.encode_prompts(emb, ids).sum().backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    assert all(p.grad is None for p in tower.parameters())


# --- PromptLearner ------------------------------------------------------------------------


def test_prompt_learner_shapes_and_trainable_parameters(tower):
    prompts = PromptLearner(tower, n_domains=2, n_classes=3, n_ctx=2)
    assert prompts.ctx.shape == (6, 2, 32)
    assert [name for name, p in prompts.named_parameters() if p.requires_grad] == ["ctx"]
    features = prompts.all_features()
    assert features.shape == (2, 3, 24) and prompts.class_mask.all()
    pairs = prompts(torch.tensor([1, 0, 1]), torch.tensor([2, 0, 0]))
    torch.testing.assert_close(pairs, features[[1, 0, 1], [2, 0, 0]])
    torch.testing.assert_close(prompts.domain_features(1), features[1])
    prompts.train()
    assert prompts.training and not tower.training


def test_prompt_learner_builds_template_plus_context(tower):
    # Context vectors set to real word embeddings give the features of the plain text.
    prompts = PromptLearner(tower, 1, 2, n_ctx=3, template="a photo of")
    words = ["the", "handwritten", "digit"]
    with torch.no_grad():
        prompts.ctx[1] = tower.token_embedding(tower.tokenize([" ".join(words)])[0, 1:4])
    torch.testing.assert_close(
        prompts.domain_features(0)[1], _prompt_with_words(tower, "a photo of", words)
    )


def test_prompt_learner_ragged_class_counts(tower):
    prompts = PromptLearner(tower, 3, [2, 4, 1], n_ctx=1)
    assert prompts.ctx.shape[0] == 7 and prompts.n_classes_per_domain == (2, 4, 1)
    features = prompts.all_features()
    assert features.shape == (3, 4, 24)
    assert prompts.class_mask.tolist() == [
        [True, True, False, False],
        [True] * 4,
        [True, False, False, False],
    ]
    assert features[~prompts.class_mask].eq(0).all()
    torch.testing.assert_close(prompts(torch.tensor([1]), torch.tensor([3]))[0], features[1, 3])
    with pytest.raises(ValueError, match="class_ids"):
        prompts(torch.tensor([2]), torch.tensor([1]))
    with pytest.raises(ValueError, match="domain_ids"):
        prompts(torch.tensor([3]), torch.tensor([0]))


def test_prompt_learner_init_and_validation(tower):
    generator = torch.Generator().manual_seed(0)
    prompts = PromptLearner(tower, 4, 25, n_ctx=4, init_std=0.02, generator=generator)
    assert abs(prompts.ctx.std().item() - 0.02) < 0.001
    again = PromptLearner(tower, 4, 25, generator=torch.Generator().manual_seed(0))
    assert torch.equal(prompts.ctx, again.ctx)
    with pytest.raises(ValueError, match="placeholder"):
        PromptLearner(tower, 1, 2, template="an x of a")
    with pytest.raises(ValueError, match="one per"):
        PromptLearner(tower, 2, [3])
    with pytest.raises(TypeError, match="TextTower"):
        PromptLearner(object(), 1, 2)


def test_only_selected_context_rows_get_gradients(tower):
    prompts = PromptLearner(tower, 2, 2)
    prompts(torch.tensor([1]), torch.tensor([0])).sum().backward()
    row_has_grad = prompts.ctx.grad.abs().sum(dim=(1, 2)) > 0
    assert row_has_grad.tolist() == [False, False, True, False]


def test_prompt_learning_separates_classes(tower):
    # Stage-1 in miniature: fixed "image features" of 3 classes; L_i2t + L_t2i on the
    # prompts' text features must decrease and match every image to its class prompt.
    torch.manual_seed(0)
    centers = torch.nn.functional.normalize(torch.randn(3, 24), dim=1)
    labels = torch.arange(3).repeat(4)
    images = torch.nn.functional.normalize(centers[labels] + 0.1 * torch.randn(12, 24), dim=1)
    prompts = PromptLearner(tower, 1, 3, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam([prompts.ctx], lr=0.05)
    losses = []
    for _ in range(40):
        text = torch.nn.functional.normalize(prompts(torch.zeros_like(labels), labels), dim=1)
        loss = image_to_text_contrastive(images, text, labels, logit_scale=10.0)
        loss = loss + text_to_image_contrastive(images, text, labels, logit_scale=10.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    text = torch.nn.functional.normalize(prompts.domain_features(0), dim=1)
    assert torch.equal((images @ text.T).argmax(1), labels)


class _SubmoduleTower(torch.nn.Module):
    """A user's minimal tower: ``token_embedding`` is a submodule, not a method."""

    embed_dim, output_dim, context_length = 8, 4, 12

    def __init__(self):
        super().__init__()
        self.token_embedding = torch.nn.Embedding(10, 8)
        self.proj = torch.nn.Linear(8, 4)

    def tokenize(self, texts):
        ids = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            words = text.replace(".", " .").split()[: self.context_length - 1]
            ids[row, : len(words)] = torch.tensor([1 + (w == "X") for w in words])
            ids[row, len(words)] = 9  # end of text, the highest id (as in CLIP)
        return ids

    def encode_prompts(self, prompt_embeddings, token_ids):
        eot = token_ids.argmax(dim=1)
        return self.proj(prompt_embeddings[torch.arange(len(eot)), eot])


def test_tower_check_sees_submodule_members():
    # members an nn.Module holds as submodules count (Python >= 3.12's runtime protocols
    # would not see them); an incomplete tower is named with what it lacks
    custom = _SubmoduleTower()
    assert check_text_tower(custom) is custom
    assert PromptLearner(custom, 2, 3, n_ctx=2).all_features().shape == (2, 3, 4)
    incomplete = torch.nn.Module()
    incomplete.token_embedding = torch.nn.Embedding(3, 2)
    with pytest.raises(TypeError, match=r"lacks \['embed_dim', 'output_dim'"):
        check_text_tower(incomplete)
    with pytest.raises(TypeError, match="must be a text tower"):
        PromptLearner(incomplete, 2, 3)


# --- OpenCLIPTextTower (optional dependency) ----------------------------------------------


def _tiny_clip_config():
    return {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 16,
            "layers": 1,
            "width": 32,
            "patch_size": 8,
            "head_width": 16,
        },
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 2,
        },
    }


def _local_checkpoint(model, folder, name):
    """Register ``name`` as an open_clip architecture and save ``model`` as its local
    checkpoint; returns the checkpoint's path."""
    import json

    import open_clip

    config_dir = folder / "configs"
    config_dir.mkdir()
    (config_dir / f"{name}.json").write_text(json.dumps(_tiny_clip_config()))
    open_clip.add_model_config(config_dir)
    checkpoint = folder / f"{name}.pt"
    torch.save({"state_dict": model.state_dict()}, checkpoint)
    return checkpoint


@pytest.fixture(scope="module")
def tiny_clip():
    open_clip = pytest.importorskip("open_clip", reason="open_clip (skucdr[clip]) not installed")
    torch.manual_seed(0)
    return open_clip.CLIP(**_tiny_clip_config()).eval()


def test_openclip_tower_matches_encode_text(tiny_clip):
    import open_clip

    tower = OpenCLIPTextTower(tiny_clip)
    assert check_text_tower(tower) is tower
    assert (tower.embed_dim, tower.output_dim, tower.context_length) == (32, 16, 16)
    assert not any(p.requires_grad for p in tower.parameters())
    texts = ["an image of a dog.", "a sketch of a house."]
    ids = open_clip.tokenize(texts, context_length=16)
    assert torch.equal(tower.tokenize(texts), ids)
    with torch.no_grad():
        expected = tiny_clip.encode_text(ids)
    torch.testing.assert_close(encode_text(tower, texts), expected)


def test_openclip_tower_legacy_sequence_first_transformer(tiny_clip):
    import copy

    class SequenceFirst(torch.nn.Module):  # open_clip < 2.24: (L, n, D), no batch_first
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, attn_mask=None):
            return self.inner(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)

    legacy = copy.deepcopy(tiny_clip)
    legacy.transformer = SequenceFirst(legacy.transformer)
    texts = ["an image of a cat."]
    torch.testing.assert_close(
        encode_text(OpenCLIPTextTower(legacy), texts),
        encode_text(OpenCLIPTextTower(tiny_clip), texts),
    )


def test_prompt_learner_with_openclip_tower(tiny_clip):
    tower = OpenCLIPTextTower(tiny_clip)
    prompts = PromptLearner(tower, 2, 3)
    assert prompts.all_features().shape == (2, 3, 16)
    words = ["a", "small", "red", "car"]
    word_ids = tower.tokenize([" ".join(words)])[0, 1:5]
    with torch.no_grad():
        prompts.ctx[4] = tower.token_embedding(word_ids)
    torch.testing.assert_close(
        prompts.domain_features(1)[1], _prompt_with_words(tower, "an image of a", words)
    )


def test_openclip_from_pretrained_local_checkpoint(tiny_clip, tmp_path):


    checkpoint = _local_checkpoint(tiny_clip, tmp_path, "skucdr-tiny-test")
    tower = OpenCLIPTextTower.from_pretrained("skucdr-tiny-test", checkpoint)
    texts = ["a photo of a dog."]
    torch.testing.assert_close(
        encode_text(tower, texts), encode_text(OpenCLIPTextTower(tiny_clip), texts)
    )
    with pytest.raises(FileNotFoundError, match="local"):
        OpenCLIPTextTower.from_pretrained("skucdr-tiny-test", tmp_path / "missing.pt")


def test_openclip_visual_tower_as_an_encoder(tiny_clip, tmp_path):

    import numpy as np
    from torch.nn import functional as F

    from skucdr import UniversalCDRRetriever
    from skucdr.nn.encoders import OpenCLIPVisual

    encoder = OpenCLIPVisual(tiny_clip).eval()
    assert encoder.feature_dim == 16 and encoder.image_size == (16, 16)
    x = torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    resized = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False,
                            antialias=True)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), tiny_clip.encode_image((resized - mean) / std))
    # a local checkpoint, and a frozen tower under UEM's head
    checkpoint = _local_checkpoint(tiny_clip, tmp_path, "skucdr-tiny-visual")
    loaded = OpenCLIPVisual.from_pretrained("skucdr-tiny-visual", checkpoint).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), encoder(x))
    X = np.random.RandomState(0).rand(24, 3, 16, 16).astype(np.float32)
    model = UniversalCDRRetriever(encoder=loaded, freeze_encoder=True, n_components=4, max_epochs=1,
                                  batch_size=8, n_prototypes=2, device="cpu", random_state=0)
    Z = model.fit(X, sample_domain=np.repeat(["a", "b"], 12)).transform(
        X, sample_domain=np.repeat(["a", "b"], 12))
    assert Z.shape == (24, 4) and np.isfinite(Z).all()
    with pytest.raises(FileNotFoundError, match="local"):
        OpenCLIPVisual.from_pretrained("skucdr-tiny-visual", tmp_path / "missing.pt")
