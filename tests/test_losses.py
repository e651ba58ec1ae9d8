"""One factory over pytorch-metric-learning; CrossBatchMemory switched on after a warm-up."""
import pytest
import torch

from tmr_lib.losses import LOSSES, canonical_loss_name, make_loss


def _toy(n_labels=6, per=4, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(n_labels * per, dim, generator=g), dim=1)
    return emb, torch.arange(n_labels).repeat_interleave(per)


def test_names_and_aliases():
    assert canonical_loss_name("ContrastiveLoss") == "contrastive"
    assert canonical_loss_name("MultiSimilarityLoss") == "multisimilarity"
    assert canonical_loss_name("sub-center-arcface") == "subcenter_arcface"
    with pytest.raises(ValueError, match="choose one of"):
        canonical_loss_name("hinge")


def test_default_is_second_place_contrastive_in_xbm():
    loss = make_loss(embed_dim=16, xbm_memory=64)
    assert loss.name == "contrastive" and loss.loss.pos_margin == 0 and loss.loss.neg_margin == 1
    assert loss.memory is not None and loss.memory.memory_size == 64
    assert not loss.use_memory  # switched on by the training loop after the warm-up
    emb, labels = _toy()
    loss.use_memory = True
    loss(emb, labels)
    assert loss.memory.queue_idx == len(emb)


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_is_finite_and_differentiable(name):
    emb, labels = _toy()
    emb.requires_grad_(True)
    loss = make_loss(name, embed_dim=16, num_classes=6, xbm_memory=64)
    value = loss(emb, labels)
    value.backward()
    assert torch.isfinite(value) and emb.grad is not None


def test_classification_loss_needs_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        make_loss("arcface", embed_dim=16)


def test_loss_falls_on_a_toy_set():
    """A few AdamW steps on a small linear embedding of separable points lower the loss."""
    torch.manual_seed(0)
    x = torch.randn(6, 8).repeat_interleave(4, dim=0) + 0.3 * torch.randn(24, 8)
    labels = torch.arange(6).repeat_interleave(4)
    net = torch.nn.Linear(8, 16)
    loss_fn = make_loss("contrastive", embed_dim=16, xbm_memory=0)
    opt = torch.optim.AdamW(net.parameters(), lr=0.05)
    values = []
    for _ in range(15):
        loss = loss_fn(torch.nn.functional.normalize(net(x), dim=1), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(loss.item())
    assert values[-1] < 0.6 * values[0]
