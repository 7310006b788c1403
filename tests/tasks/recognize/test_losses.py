"""Margin heads and the projection head: shapes, margin algebra, AdaFace signs, trainability."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tasks.recognize.losses import (
    AdaFaceHead,
    ArcFaceHead,
    CosFaceHead,
    ProjectionHead,
    make_head,
)

DIM, CLASSES, BATCH = 16, 5, 8


def _batch(seed: int = 0, batch: int = BATCH) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    raw = torch.randn(batch, DIM, generator=gen) * 3
    norms = raw.norm(dim=1, keepdim=True)
    labels = torch.randint(0, CLASSES, (batch,), generator=gen)
    return raw / norms, norms, labels


def _cos(head, embeddings):
    return embeddings @ F.normalize(head.kernel, dim=0)


def _target_mask(labels):
    return F.one_hot(labels, CLASSES).bool()


@pytest.mark.parametrize("name", ["adaface", "arcface", "cosface", "ArcFace"])
def test_factory_and_shapes(name):
    torch.manual_seed(0)
    head = make_head(name, DIM, CLASSES)
    emb, norms, labels = _batch()
    logits = head(emb, norms, labels)
    assert logits.shape == (BATCH, CLASSES)
    assert torch.isfinite(logits).all()
    assert F.cross_entropy(logits, labels).ndim == 0


def test_factory_rejects_unknown_name():
    with pytest.raises(ValueError, match="adaface, arcface, cosface"):
        make_head("sphereface", DIM, CLASSES)


def test_bad_shapes_are_rejected():
    head = ArcFaceHead(DIM, CLASSES)
    emb, norms, labels = _batch()
    with pytest.raises(ValueError, match="embeddings"):
        head(emb[:, :3], norms, labels)
    with pytest.raises(ValueError, match="labels"):
        head(emb, norms, labels[:3])
    with pytest.raises(ValueError, match="norms"):
        AdaFaceHead(DIM, CLASSES)(emb, None, labels)


@pytest.mark.parametrize("cls", [ArcFaceHead, CosFaceHead])
def test_zero_margin_gives_scaled_cosine(cls):
    torch.manual_seed(0)
    head = cls(DIM, CLASSES, m=0.0, s=30.0)
    emb, norms, labels = _batch()
    torch.testing.assert_close(head(emb, norms, labels), 30.0 * _cos(head, emb))


@pytest.mark.parametrize("cls,m", [(ArcFaceHead, 0.5), (CosFaceHead, 0.35)])
def test_margin_lowers_only_the_target_logit(cls, m):
    torch.manual_seed(0)
    head = cls(DIM, CLASSES, m=m, s=10.0)
    emb, norms, labels = _batch()
    logits = head(emb, norms, labels)
    plain = 10.0 * _cos(head, emb)
    target = _target_mask(labels)
    torch.testing.assert_close(logits[~target], plain[~target])
    assert (logits[target] < plain[target] - 1e-4).all()
    cos_t = _cos(head, emb)[target]
    if cls is CosFaceHead:
        expected = 10.0 * (cos_t - m)
    else:
        expected = 10.0 * torch.cos((torch.acos(cos_t) + m).clamp(max=math.pi - 1e-3))
    torch.testing.assert_close(logits[target], expected)


def _adaface(**kwargs) -> AdaFaceHead:
    head = AdaFaceHead(DIM, CLASSES, **kwargs)
    head.batch_mean.fill_(2.0)
    head.batch_std.fill_(1.0)
    return head.eval()


def test_adaface_margin_scaler_follows_norms_like_the_official_code():
    head = _adaface(m=0.4, h=0.333)
    norms = torch.tensor([[0.5], [1.0], [2.0], [3.0], [50.0]])
    scaler, g_angular, g_add = head.margins(norms)
    expected = ((norms - 2.0) / (1.0 + 1e-3) * 0.333).clamp(-1, 1)
    torch.testing.assert_close(scaler, expected)
    assert scaler[2].item() == pytest.approx(0.0)
    assert scaler[-1].item() == 1.0  # clipped
    # higher norm (better quality) -> scaler up, angular margin down (negative), additive up
    assert (scaler.diff(dim=0) >= 0).all()
    assert (g_angular.diff(dim=0) <= 0).all() and g_angular[-1].item() == pytest.approx(-0.4)
    assert (g_add.diff(dim=0) >= 0).all() and g_add[-1].item() == pytest.approx(0.8)
    torch.testing.assert_close(g_angular, -0.4 * scaler)
    torch.testing.assert_close(g_add, 0.4 + 0.4 * scaler)


def test_adaface_reduces_to_arcface_and_cosface_at_the_scaler_extremes():
    torch.manual_seed(0)
    ada = _adaface(m=0.4, h=0.333, s=10.0)
    ada.batch_std.fill_(0.1)  # narrow enough that a tiny norm clips the scaler to -1
    arc, cos = ArcFaceHead(DIM, CLASSES, m=0.4, s=10.0), CosFaceHead(DIM, CLASSES, m=0.4, s=10.0)
    arc.kernel.data.copy_(ada.kernel.data)
    cos.kernel.data.copy_(ada.kernel.data)
    emb, _, labels = _batch()
    low = torch.full((BATCH, 1), 1e-3)  # scaler clipped to -1: ArcFace
    mid = torch.full((BATCH, 1), 2.0)  # scaler 0: CosFace
    torch.testing.assert_close(ada(emb, low, labels), arc(emb, None, labels))
    torch.testing.assert_close(ada(emb, mid, labels), cos(emb, None, labels))


def test_adaface_target_logit_matches_the_paper_formula():
    head = _adaface(m=0.4, h=0.333, s=64.0)
    emb, _, labels = _batch(batch=1)
    norm = torch.tensor([[2.6]])
    scaler = (2.6 - 2.0) / 1.001 * 0.333
    theta = math.acos(_cos(head, emb)[0, labels[0]].item())
    expected = 64.0 * (math.cos(theta - 0.4 * scaler) - (0.4 + 0.4 * scaler))
    assert head(emb, norm, labels)[0, labels[0]].item() == pytest.approx(expected, rel=1e-5)


def test_adaface_statistics_update_in_training_only():
    head = AdaFaceHead(DIM, CLASSES, t_alpha=0.01)
    emb, norms, labels = _batch()
    head.eval()(emb, norms, labels)
    assert head.batch_mean.item() == 20.0 and head.batch_std.item() == 100.0
    head.train()(emb, norms, labels)
    assert head.batch_mean.item() == pytest.approx(0.99 * 20 + 0.01 * norms.mean().item())
    assert head.batch_std.item() == pytest.approx(0.99 * 100 + 0.01 * norms.std().item())
    # a batch of one keeps the std finite (the unbiased std of one value is NaN)
    head(emb[:1], norms[:1], labels[:1])
    assert math.isfinite(head.batch_std.item())


def test_adaface_does_not_backpropagate_into_norms():
    head = AdaFaceHead(DIM, CLASSES)
    emb, norms, labels = _batch()
    emb.requires_grad_(True)
    norms.requires_grad_(True)
    F.cross_entropy(head(emb, norms, labels), labels).backward()
    assert emb.grad is not None and norms.grad is None


def _toy_problem(seed: int = 0, per_class: int = 16):
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(CLASSES, DIM, generator=gen), dim=1)
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    x = centres[labels] + 0.1 * torch.randn(len(labels), DIM, generator=gen)
    return F.normalize(x, dim=1), labels


@pytest.mark.parametrize("name", ["adaface", "arcface", "cosface"])
def test_a_few_steps_reduce_the_loss(name):
    torch.manual_seed(0)
    x, labels = _toy_problem()
    proj = ProjectionHead(DIM, hidden=32)
    head = make_head(name, DIM, CLASSES)
    opt = torch.optim.Adam([*proj.parameters(), *head.parameters()], lr=1e-2)
    losses = []
    for _ in range(30):
        emb, norms = proj(x)
        loss = F.cross_entropy(head(emb, norms, labels), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_projection_head_starts_as_identity():
    x = torch.randn(6, DIM) * 4
    for proj in (ProjectionHead(DIM), ProjectionHead(DIM, hidden=32)):
        emb, norms = proj(x)
        torch.testing.assert_close(emb, F.normalize(x, dim=1))
        torch.testing.assert_close(norms, x.norm(dim=1, keepdim=True))


def test_projection_head_widening_preserves_cosines():
    torch.manual_seed(0)
    x = F.normalize(torch.randn(6, DIM), dim=1)
    emb, _ = ProjectionHead(DIM, out_dim=2 * DIM)(x)
    assert emb.shape == (6, 2 * DIM)
    torch.testing.assert_close(emb @ emb.T, x @ x.T, atol=1e-5, rtol=1e-5)
