"""TPSNet losses, one function per equation.

Stage 1 (domain prompt generation) trains the prompt context vectors with
``L_prompt = L_i2t + L_t2i`` (:func:`image_to_text_contrastive`,
:func:`text_to_image_contrastive`, in the CLIP-ReID form). Stage 2 trains the dual-prior
network with ``L = alpha L_pce + beta L_i2tce`` (:func:`prototype_ce`,
:func:`label_smoothed_i2t_ce`) while class prototypes follow the embeddings
(:func:`momentum_update_prototypes`).

Notation: ``s(v, t) = logit_scale * <v, t>`` is a similarity logit. The contrastive and
image-to-text losses use their inputs as given, like CLIP-ReID; pass L2-normalised features
and a ``logit_scale`` such as CLIP's 100 for cosine logits. :func:`prototype_ce` normalises
its inputs itself (it is defined with cosines). Every loss is the mean over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "image_to_text_contrastive",
    "text_to_image_contrastive",
    "prototype_ce",
    "label_smoothed_i2t_ce",
    "momentum_update_prototypes",
]


def _check_batch(image_features, text_features, labels):
    if image_features.ndim != 2 or text_features.shape != image_features.shape:
        raise ValueError(
            "image_features and text_features must both have shape (n, dim), got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}."
        )
    if labels.shape != (image_features.shape[0],):
        raise ValueError(
            f"labels must have shape ({image_features.shape[0]},), got {tuple(labels.shape)}."
        )


def image_to_text_contrastive(image_features, text_features, labels, *, logit_scale=1.0):
    r"""Image-to-text contrastive loss ``L_i2t`` (CLIP-ReID stage 1).

    .. math::

        L_{i2t} = \frac{1}{n} \sum_i -\log
            \frac{\exp s(v_i, t_{y_i})}{\sum_{a=1}^{n} \exp s(v_i, t_{y_a})}

    The text of every image of the batch is a candidate (texts of repeated labels repeat;
    every positive has the same logit, so this equals CLIP-ReID's SupCon form).

    Parameters
    ----------
    image_features : Tensor of shape (n, dim)
        ``v_i``.
    text_features : Tensor of shape (n, dim)
        ``t_{y_i}``: the text feature of each image's (pseudo-)label.
    labels : LongTensor of shape (n,)
        ``y_i``; in TPSNet a (domain, class) pair encoded as one id.
    logit_scale : float or Tensor, default=1.0
        Multiplies the dot products.

    Returns
    -------
    loss : Tensor (scalar)
    """
    _check_batch(image_features, text_features, labels)
    logits = logit_scale * image_features @ text_features.T  # [i, a] = s(v_i, t_{y_a})
    positive = labels[:, None] == labels[None, :]
    log_prob = logits.log_softmax(dim=1)
    return -((log_prob * positive).sum(1) / positive.sum(1)).mean()


def text_to_image_contrastive(image_features, text_features, labels, *, logit_scale=1.0):
    r"""Text-to-image contrastive loss ``L_t2i`` (CLIP-ReID stage 1, SupCon form).

    .. math::

        L_{t2i} = \frac{1}{n} \sum_i \frac{-1}{|P(y_i)|} \sum_{p \in P(y_i)} \log
            \frac{\exp s(v_p, t_{y_i})}{\sum_{a=1}^{n} \exp s(v_a, t_{y_i})},
        \qquad P(y) = \{p : y_p = y\}

    Parameters
    ----------
    image_features : Tensor of shape (n, dim)
        ``v_a``.
    text_features : Tensor of shape (n, dim)
        ``t_{y_i}``: the text feature of each image's label (the anchors).
    labels : LongTensor of shape (n,)
        ``y_i``.
    logit_scale : float or Tensor, default=1.0
        Multiplies the dot products.

    Returns
    -------
    loss : Tensor (scalar)
    """
    _check_batch(image_features, text_features, labels)
    logits = logit_scale * text_features @ image_features.T  # [i, a] = s(v_a, t_{y_i})
    positive = labels[:, None] == labels[None, :]
    log_prob = logits.log_softmax(dim=1)
    return -((log_prob * positive).sum(1) / positive.sum(1)).mean()


def _per_image_classes(candidates, n, name):
    """(C, d) -> broadcastable (1, C, d); (n, C, d) kept."""
    if candidates.ndim == 2:
        return candidates.unsqueeze(0)
    if candidates.ndim == 3 and candidates.shape[0] == n:
        return candidates
    raise ValueError(
        f"{name} must have shape (C, dim) or ({n}, C, dim), got {tuple(candidates.shape)}."
    )


def _masked_log_softmax(logits, labels, class_mask):
    n, n_classes = logits.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}.")
    if class_mask is not None:
        class_mask = class_mask.expand(n, n_classes)
        logits = logits.masked_fill(~class_mask, float("-inf"))
    return logits.log_softmax(dim=1), class_mask


def prototype_ce(embeddings, prototypes, labels, *, tau=0.05, class_mask=None):
    r"""Prototype cross-entropy ``L_pce``.

    .. math::

        L_{pce} = \frac{1}{n} \sum_i -\log
            \frac{\exp(\cos(I'_i, P_{y_i}) / \tau)}{\sum_c \exp(\cos(I'_i, P_c) / \tau)}

    Parameters
    ----------
    embeddings : Tensor of shape (n, dim)
        ``I'_i`` (normalised here).
    prototypes : Tensor of shape (C, dim) or (n, C, dim)
        Class prototypes ``P_c`` (normalised here): shared, or the prototypes of each
        image's domain.
    labels : LongTensor of shape (n,)
        Pseudo-label ``y_i`` in ``[0, C)``.
    tau : float, default=0.05
        Temperature.
    class_mask : BoolTensor of shape (C,) or (n, C), default=None
        False for padded classes, left out of the sum over ``c``.

    Returns
    -------
    loss : Tensor (scalar)
    """
    n = embeddings.shape[0]
    prototypes = _per_image_classes(prototypes, n, "prototypes")
    cosine = F.normalize(prototypes, dim=-1) @ F.normalize(embeddings, dim=-1)[:, :, None]
    log_prob, _ = _masked_log_softmax(cosine.squeeze(-1) / tau, labels, class_mask)
    return F.nll_loss(log_prob, labels)


def label_smoothed_i2t_ce(
    image_features, text_features, labels, *, epsilon=0.1, logit_scale=1.0, class_mask=None
):
    r"""Image-to-text cross-entropy with label smoothing ``L_i2tce``.

    .. math::

        L_{i2tce} = \frac{1}{n} \sum_i -\sum_{c=1}^{C} q_{ic} \log
            \frac{\exp s(I'_i, t_c)}{\sum_{c'} \exp s(I'_i, t_{c'})},
        \qquad q_{ic} = (1 - \epsilon)\,[c = y_i] + \epsilon / C

    ``t_c`` are the C prompt text features of the image's domain.

    Parameters
    ----------
    image_features : Tensor of shape (n, dim)
        ``I'_i``.
    text_features : Tensor of shape (C, dim) or (n, C, dim)
        Text features of the classes: shared, or those of each image's domain.
    labels : LongTensor of shape (n,)
        ``y_i`` in ``[0, C)``.
    epsilon : float, default=0.1
        Label-smoothing weight.
    logit_scale : float or Tensor, default=1.0
        Multiplies the dot products.
    class_mask : BoolTensor of shape (C,) or (n, C), default=None
        False for padded classes: they get no logit and ``C`` counts the valid classes
        of each image.

    Returns
    -------
    loss : Tensor (scalar)
    """
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"epsilon must lie in [0, 1), got {epsilon!r}.")
    n = image_features.shape[0]
    text_features = _per_image_classes(text_features, n, "text_features")
    logits = logit_scale * (text_features @ image_features[:, :, None]).squeeze(-1)
    log_prob, class_mask = _masked_log_softmax(logits, labels, class_mask)
    target = F.one_hot(labels, logits.shape[1]).to(log_prob.dtype)
    if class_mask is None:
        smooth = torch.full_like(log_prob, 1.0 / logits.shape[1])
    else:
        valid = class_mask.to(log_prob.dtype)
        smooth = valid / valid.sum(dim=1, keepdim=True)
    q = (1.0 - epsilon) * target + epsilon * smooth
    # Padded classes have q = 0 and log_prob = -inf; leave them out instead of 0 * inf.
    return -torch.where(q > 0, q * log_prob, 0.0).sum(dim=1).mean()


@torch.no_grad()
def momentum_update_prototypes(prototypes, embeddings, labels, *, momentum=0.9, normalize=True):
    r"""Momentum update of the class prototypes, in place.

    .. math::

        P_y \leftarrow \frac{m P_y + (1 - m) \bar I'_y}{\lVert m P_y + (1 - m) \bar I'_y
            \rVert}, \qquad \bar I'_y = \operatorname{mean}_{i: y_i = y} I'_i

    for every label ``y`` present in the batch; other prototypes are unchanged. Averaging
    the batch's embeddings of a label makes the update independent of the order of the
    samples (a per-sample sequential update would weigh them by powers of ``m``).

    Parameters
    ----------
    prototypes : Tensor of shape (C, dim)
        Updated in place (no gradient).
    embeddings : Tensor of shape (n, dim)
        ``I'_i`` of the batch.
    labels : LongTensor of shape (n,)
        Rows of ``prototypes`` to update.
    momentum : float, default=0.9
        ``m``: the weight of the old prototype.
    normalize : bool, default=True
        Re-normalise the updated prototypes to unit length.

    Returns
    -------
    prototypes : Tensor of shape (C, dim)
        The same tensor.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must lie in [0, 1], got {momentum!r}.")
    if prototypes.ndim != 2 or embeddings.ndim != 2 or embeddings.shape[1] != prototypes.shape[1]:
        raise ValueError(
            "prototypes (C, dim) and embeddings (n, dim) must share dim, got "
            f"{tuple(prototypes.shape)} and {tuple(embeddings.shape)}."
        )
    if labels.shape != (embeddings.shape[0],):
        raise ValueError(
            f"labels must have shape ({embeddings.shape[0]},), got {tuple(labels.shape)}."
        )
    n_classes = prototypes.shape[0]
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), one row of prototypes each.")
    sums = torch.zeros_like(prototypes).index_add_(0, labels, embeddings.to(prototypes.dtype))
    counts = torch.bincount(labels, minlength=n_classes)
    present = counts > 0
    means = sums[present] / counts[present, None].to(prototypes.dtype)
    updated = momentum * prototypes[present] + (1.0 - momentum) * means
    if normalize:
        updated = F.normalize(updated, dim=-1)
    prototypes[present] = updated
    return prototypes
