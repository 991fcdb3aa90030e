"""Top-k soft labels (LPQLD's MR-k): selection, target reconstruction, 8-bit values, and the loss."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lpld.labels.topk import (check_topk, check_topk_pair, decode_uint8, encode_uint8, index_dtype,
                              parse_label_quantization, scatter_topk_logits, select_topk, topk_target,
                              uint8_distortion)
from lpld.validate.loss import kd_loss, topk_kd_loss


def _logits(rows=6, classes=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, classes, generator=gen) * 4


def _reference_target(values, indices, num_classes, temperature, ls=0.0):
    """The authors' MR-k target written out row by row: smoothing and softmax over the k stored
    logits, each probability put at its class."""
    out = torch.zeros(values.shape[0], num_classes)
    for r in range(values.shape[0]):
        v = [float(x) for x in values[r]]
        v = [(1 - ls) * x + ls / len(v) for x in v]
        z = [x / temperature for x in v]
        m = max(z)
        e = [torch.exp(torch.tensor(x - m, dtype=torch.float64)).item() for x in z]
        for j, c in enumerate(indices[r].tolist()):
            out[r, c] = e[j] / sum(e)
    return out


def test_parse_label_quantization():
    assert parse_label_quantization("MR-10") == 10 and parse_label_quantization("mr-250") == 250
    assert parse_label_quantization(None) is None and parse_label_quantization("None") is None
    for bad in ("MS-10", "MRS-10", "hard", "MR-"):
        with pytest.raises(ValueError, match="MR-<k>"):
            parse_label_quantization(bad)


@pytest.mark.parametrize("k", [0, -1, 13, 2.0, True])
def test_bad_k_is_a_one_line_error(k):
    with pytest.raises(ValueError, match=r"label_topk must be") as err:
        check_topk(k, 12)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"label_topk must be"):
        select_topk(_logits(), k)


def test_index_dtype_by_class_count():
    assert index_dtype(200) == index_dtype(10450) == index_dtype(32767) == torch.int16
    assert index_dtype(32768) == torch.int32
    values, indices = select_topk(_logits(2, 10450), 5)
    assert values.dtype == torch.float16 and indices.dtype == torch.int16 and int(indices.max()) < 10450


def test_select_topk_keeps_the_largest_in_order():
    logits = _logits()
    values, indices = select_topk(logits, 4)
    assert values.shape == indices.shape == (6, 4)
    for r in range(6):
        order = sorted(range(12), key=lambda c: -float(logits[r, c]))[:4]
        assert indices[r].tolist() == order
        assert values[r].tolist() == logits[r, order].half().tolist()


def test_pair_checks_are_clear():
    v, i = select_topk(_logits(), 3)
    with pytest.raises(TypeError, match="integer"):
        check_topk_pair(v, i.float())
    with pytest.raises(TypeError, match="float"):
        check_topk_pair(i, i)
    with pytest.raises(ValueError, match=r"must both be \[batch, k\]"):
        check_topk_pair(v, i[:, :2])
    with pytest.raises(ValueError, match="outside 0..11"):
        check_topk_pair(v, i + 12, num_classes=12)
    with pytest.raises(ValueError, match="outside 0..11"):
        check_topk_pair(v, i - 12, num_classes=12)
    with pytest.raises(ValueError, match="only 2 classes"):
        check_topk_pair(v, i, num_classes=2)


@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_target_equals_straightforward_reference(ls):
    logits = _logits(5, 20, seed=3)
    values, indices = select_topk(logits, 7)
    got = topk_target(values, indices, 20, 3.0, label_smoothing=ls)
    torch.testing.assert_close(got, _reference_target(values, indices, 20, 3.0, ls), rtol=1e-6, atol=1e-7)
    assert bool((got.sum(1) - 1).abs().max() < 1e-6)
    # the loss's -inf scatter + one softmax gives the same target up to float rounding
    full = scatter_topk_logits(values.float() * (1 - ls) + ls / 7, indices, 20)
    torch.testing.assert_close(F.softmax(full / 3.0, dim=1), got, rtol=1e-6, atol=1e-7)


def test_uint8_codec_roundtrip_and_distortion():
    values, _ = select_topk(_logits(64, 1000, seed=5), 10)
    coded = encode_uint8(values)
    assert coded.codes.dtype == torch.uint8 and coded.row_max.dtype == torch.float16
    decoded = decode_uint8(coded)
    v = values.float()
    step = (v.amax(1) - v.amin(1)) / 255
    assert bool(((decoded - v).abs() <= step.unsqueeze(1) / 2 + 1e-6).all())  # half a step at most
    torch.testing.assert_close(decoded[:, 0], v[:, 0], rtol=0, atol=1e-5)  # the row max decodes exactly
    torch.testing.assert_close(decoded[:, -1], v[:, -1], rtol=0, atol=0)    # and the row min
    low, high = uint8_distortion(values, 2.0), uint8_distortion(values, 20.0)
    assert 0 < high.mean_kl < low.mean_kl < 1e-4 and low.max_kl >= low.mean_kl
    constant = torch.full((2, 4), 3.0, dtype=torch.float16)  # a constant row codes as 0, decodes exactly
    torch.testing.assert_close(decode_uint8(encode_uint8(constant)), constant.float())
    with pytest.raises(ValueError, match="non-finite"):
        encode_uint8(torch.tensor([[1.0, float("inf")]]))


# --- loss ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["kl", "kl_t2"])
@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_k_equal_classes_is_the_full_label_loss_exactly(variant, ls):
    """A top-k store with k = num_classes trains exactly like the full-label store: same loss and
    same gradient, bit for bit."""
    teacher = _logits(8, 1000, seed=1).half()  # (softmax over k then scatter would differ in the last bit)
    values, indices = select_topk(teacher.float(), 1000)
    s1 = _logits(8, 1000, seed=2).requires_grad_(True)
    s2 = s1.detach().clone().requires_grad_(True)
    full = kd_loss(s1, teacher, 4.0, variant, ls)
    top = topk_kd_loss(s2, values, indices, 4.0, variant, ls)
    full.backward()
    top.backward()
    assert torch.equal(full, top)
    assert torch.equal(s1.grad, s2.grad)


@pytest.mark.parametrize("variant", ["kl", "kl_t2"])
def test_topk_loss_equals_loop_reference(variant):
    student = _logits(6, 15, seed=4)
    values, indices = select_topk(_logits(6, 15, seed=5), 4)
    t, ts = 5.0, 0.7
    target = _reference_target(values, indices, 15, t)
    ref = 0.0
    for r in range(6):
        log_q = F.log_softmax(student[r] / ts, dim=0)
        for c in range(15):
            p = float(target[r, c])
            if p > 0:
                ref += p * (torch.log(torch.tensor(p)) - log_q[c]).item()
    ref /= 6
    if variant == "kl_t2":
        ref *= t ** 2  # the teacher's T, as theirs (line 788), also with a separate student T
    got = topk_kd_loss(student, values, indices, t, variant, student_temperature=ts)
    assert float(got) == pytest.approx(ref, rel=1e-5)


def test_tiny_loss_is_the_divergence_not_their_tiny_branch():
    """Their Tiny branch scatters log-softmax targets into zeros and passes them to KLDivLoss as
    probabilities: negative "probabilities" make it NaN. Ours is the KL divergence (x T^2), like
    LPLD's Tiny loss."""
    student = _logits(4, 10, seed=6)
    values, indices = select_topk(_logits(4, 10, seed=7), 3)
    t = 4.0
    theirs_target = torch.zeros(4, 10).scatter_(1, indices.long(), F.log_softmax(values.float() / t, dim=1))
    theirs = F.kl_div(F.log_softmax(student / t, dim=1), theirs_target, reduction="batchmean") * t ** 2
    ours = topk_kd_loss(student, values, indices, t, "kl_t2")
    assert float(ours) == pytest.approx(float(topk_kd_loss(student, values, indices, t, "kl")) * t ** 2, rel=1e-6)
    assert float(ours) > 0 and torch.isfinite(ours)
    assert torch.isnan(theirs)


def test_topk_loss_rejects_mismatches():
    values, indices = select_topk(_logits(4, 12), 3)
    with pytest.raises(ValueError, match="student rows"):
        topk_kd_loss(_logits(3, 12), values, indices, 2.0)
    with pytest.raises(ValueError, match="only 2 classes"):
        topk_kd_loss(_logits(4, 2), values, indices, 2.0)
    big = indices.clone()
    big[0, 0] = 12  # past the classes: the step does not range-check (no sync), the scatter fails
    with pytest.raises(RuntimeError, match="out of bounds"):
        topk_kd_loss(_logits(4, 12), values, big, 2.0)
    with pytest.raises(ValueError, match="unknown loss variant"):
        topk_kd_loss(_logits(4, 12), values, indices, 2.0, "mse")


def test_summed_topk_loss_splits_over_ranks_like_the_batchmean():
    """reduction="sum" (the trainer's DDP scaling): rows split unevenly over ranks, one rank with
    none, sum to the batchmean times the rows, and an empty slice is 0, not NaN."""
    s, full = _logits(7, 12, 1), _logits(7, 12, 2)
    values, indices = select_topk(full, 3)
    for variant in ("kl", "kl_t2"):
        whole = topk_kd_loss(s, values, indices, 4.0, variant, student_temperature=0.5)
        parts = [topk_kd_loss(s[sl], values[sl], indices[sl], 4.0, variant, student_temperature=0.5, reduction="sum")
                 for sl in (slice(0, 5), slice(5, 5), slice(5, 7))]
        assert float(parts[1]) == 0.0
        torch.testing.assert_close(sum(parts) / 7, whole)
    # the student temperature is the one its log-softmax uses
    target = topk_target(values, indices, 12, 4.0)
    expect = F.kl_div(F.log_softmax(s / 0.5, 1), target, reduction="batchmean")
    torch.testing.assert_close(topk_kd_loss(s, values, indices, 4.0, student_temperature=0.5), expect)
