"""The three losses of paper 3.2 against values computed by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from cpllm_plugin.model import decoder as dec
from cpllm_plugin.training.losses import (
    LossWeights,
    pair_gap,
    rank_loss,
    score_loss,
    text_loss,
    total_loss,
)
from cpllm_plugin.training.manifest import Item


def test_rank_loss_hand_values():
    q1 = torch.tensor([4.0, 2.0, 3.0, 1.0])
    q2 = torch.tensor([3.0, 4.0, 3.0, 2.0])
    p1 = torch.tensor([3.5, 3.0, 2.0, 1.5])
    p2 = torch.tensor([4.0, 2.0, 1.0, 1.0])
    # -(q1-q2)(p1-p2): -(1)(-0.5)=0.5, -(-2)(1)=2, -(0)(1)=0, -(-1)(0.5)=0.5 -> mean 0.75
    assert rank_loss(q1, q2, p1, p2).item() == pytest.approx(0.75)
    # right orders cost nothing
    assert rank_loss(q1, q2, p2 + (q1 - q2), p2).item() == 0.0


def test_rank_loss_gradient_pushes_order():
    p1 = torch.tensor([2.0], requires_grad=True)
    p2 = torch.tensor([3.0], requires_grad=True)
    rank_loss(torch.tensor([1.0]), torch.tensor([0.0]), p1, p2).backward()
    assert p1.grad.item() == -1.0 and p2.grad.item() == 1.0  # raise p1, lower p2


def test_rank_loss_empty_batch_is_zero_and_attached():
    p = torch.zeros(0, requires_grad=True)
    loss = rank_loss(torch.zeros(0), torch.zeros(0), p, p)
    assert loss.item() == 0.0 and loss.requires_grad


def _v(crf, sha, **kw):
    return Item(path=f"{crf}.mp4", source="s", original=False, codec="libx264", crf=crf,
                sha256=sha, **kw)


def test_pair_gap_orders_and_identical_files():
    orig = Item(path="o.mp4", source="s", original=True, sha256="o")
    assert pair_gap(_v(23, "a"), _v(35, "b")) == 1.0  # lower CRF is never worse
    assert pair_gap(_v(35, "b"), _v(23, "a")) == -1.0
    assert pair_gap(orig, _v(15, "a")) == 1.0  # the original beats its variants
    assert pair_gap(_v(15, "a"), orig) == -1.0
    assert pair_gap(_v(51, "x"), _v(53, "x")) is None  # libx264 clamps 53 to 51
    assert pair_gap(_v(23, "a", pseudo=4.0), _v(35, "b", mos=2.5)) == pytest.approx(1.5)
    assert pair_gap(_v(23, "a"), Item(path="t", source="t", crf=35, original=False)) is None
    other = Item(path="v.webm", source="s", original=False, codec="libvpx-vp9", crf=40,
                 sha256="c")
    assert pair_gap(_v(23, "a"), other) is None  # CRF scales of two encoders do not compare


def test_pair_gap_margin_orders_saturated_neighbours_by_crf():
    top, next_ = _v(15, "a", pseudo=4.99), _v(19, "b", pseudo=4.99)  # VMAF saturated
    assert pair_gap(top, next_) == 0.0  # eq. 1 as is: no loss, order left to chance
    assert pair_gap(top, next_, margin=0.1) == pytest.approx(0.1)
    assert pair_gap(next_, top, margin=0.1) == pytest.approx(-0.1)
    # a wide gap is kept; a pseudo-score against the CRF order (VMAF noise) follows the CRF
    assert pair_gap(_v(23, "a", pseudo=4.5), _v(35, "b", pseudo=3.0), margin=0.1) == 1.5
    assert pair_gap(_v(23, "a", pseudo=4.0), _v(27, "b", pseudo=4.2), margin=0.1) == 0.1
    # only variants of one ladder: across sources or encoders the scores stand alone
    far = Item(path="t", source="t", original=False, codec="libx264", crf=35, pseudo=4.99,
               sha256="t")
    assert pair_gap(top, far, margin=0.1) == 0.0
    vp9 = Item(path="v.webm", source="s", original=False, codec="libvpx-vp9", crf=40,
               sha256="c", pseudo=4.99)
    assert pair_gap(top, vp9, margin=0.1) == 0.0


def test_score_loss_masks_items_without_score():
    target = torch.tensor([4.0, float("nan"), 2.0, 3.0])
    pred = torch.tensor([3.0, 1.0, 2.5, 3.0], requires_grad=True)
    has = torch.tensor([True, False, True, False])
    loss = score_loss(target, pred, has)
    assert loss.item() == pytest.approx((1.0 + 0.25) / 2)
    loss.backward()
    assert pred.grad.tolist() == pytest.approx([-1.0, 0.0, 0.5, 0.0])  # 2(p-q)/count
    none = score_loss(target, pred, torch.zeros(4, dtype=torch.bool))
    assert none.item() == 0.0 and math.isfinite(none.item())  # max(count, 1)


def test_total_loss_weights():
    a, b, c = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0)
    assert total_loss(a, b, c).item() == 7.0  # equal weights by default
    assert total_loss(a, b, c, LossWeights(2.0, 0.0, 0.5)).item() == 4.0


def test_text_loss_counts_description_tokens_only(tiny_model):
    """L3 equals a hand cross-entropy over the description positions of a full forward."""
    torch.manual_seed(0)
    m = tiny_model
    tok = m.tokenizer
    visual = torch.randn(2, 6, 64)
    embeds, valid = m.prefix(visual, None, "Rate it.")
    desc = [tok("Sharp.", add_special_tokens=False).input_ids + [tok.eos_token_id],
            tok("Blocky video.", add_special_tokens=False).input_ids + [tok.eos_token_id]]
    width = max(map(len, desc))
    target = torch.full((2, width), tok.pad_token_id)
    for r, t in enumerate(desc):
        target[r, :len(t)] = torch.tensor(t)
    with torch.no_grad():
        loss = text_loss(m.decoder, embeds, valid, target, tok.pad_token_id)
        # Full forward over [prefix, target[:-1]] with every logit, then pick by hand. The
        # single input's masked copy is dropped first, as text_loss does (the sliding window
        # then spans used tokens only; see decoder.drop_unused).
        embeds, valid = dec.drop_unused(embeds, valid)
        P, T = embeds.shape[1], embeds.shape[1] + width - 1
        seq = torch.cat([embeds, dec.embed_tokens(m.decoder)(target[:, :-1])], dim=1)
        mask = dec.prefix_lm_mask(valid, P, T, dec._window(m.decoder))
        logits = m.decoder(inputs_embeds=seq, attention_mask=mask,
                           position_ids=dec.prefix_positions(valid, T)).logits
    terms = []
    for r, t in enumerate(desc):
        for k, token in enumerate(t):
            terms.append(-F.log_softmax(logits[r, P - 1 + k], -1)[token])
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)
    # The prompt's own next-token terms are not part of L3: adding them changes the value.
    prompt_ids = tok("Rate it.\n", add_special_tokens=False).input_ids
    start = P - len(prompt_ids)  # the prompt ends the prefix
    extra = [-F.log_softmax(logits[0, start + j - 1], -1)[prompt_ids[j]]
             for j in range(1, len(prompt_ids))]
    with_prompt = torch.stack(terms + extra).mean().item()
    assert abs(with_prompt - loss.item()) > 1e-3
    # Padding is ignored: extra pad columns leave the loss unchanged.
    padded = torch.cat([target, torch.full((2, 3), tok.pad_token_id)], dim=1)
    with torch.no_grad():
        again = text_loss(m.decoder, embeds, valid, padded, tok.pad_token_id)
    assert again.item() == pytest.approx(loss.item(), rel=1e-5)
