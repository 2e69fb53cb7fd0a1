"""Tests for objmtl.models.detection.atss_assigner: hand-built cases and a loop-based reference.

Most hand-built cases are one-dimensional: every anchor and box spans y in [0, 10], so an IoU is the IoU of
the x intervals and only x decides whether a centre is inside a box. ``std`` is the unbiased one (n - 1).
"""

from __future__ import annotations

import math
import random
import statistics

import pytest
import torch

from objmtl.models.detection import IGNORED, NEGATIVE, atss_assign
from objmtl.models.detection.box_coder import anchor_points_and_boxes

torch.set_num_threads(1)

N, IG = NEGATIVE, IGNORED


def boxes_1d(*intervals: tuple[float, float]) -> torch.Tensor:
    """``(len(intervals), 4)`` float64 boxes ``[x1, 0, x2, 10]``."""
    return torch.tensor([[x1, 0.0, x2, 10.0] for x1, x2 in intervals], dtype=torch.float64).reshape(-1, 4)


def assign_1d(levels, gts, **kwargs):
    return atss_assign([boxes_1d(*level) for level in levels], boxes_1d(*gts), **kwargs)


def test_simple_case_known_positives() -> None:
    # L0: 12 anchors [10i, 10i + 10]; L1: 6 anchors [20i, 20i + 20] (flat indices 12..17); topk = 5.
    # gt0 [10, 30], centre 20. L0 nearest: [10,20] [20,30] (d 5), [0,10] [30,40] (d 15), [40,50] (d 25),
    # IoUs .5 .5 0 0 0. L1 nearest: [0,20] [20,40] (d 10), then d 30, 50, 70, IoUs 1/3 1/3 0 0 0.
    # mean = 5/3 / 10 = 1/6, var = (13/18 - 10/36) / 9 = 4/81, threshold = 1/6 + 2/9 = 7/18 = .389:
    # the two .5 anchors (centres 15, 25 inside) are positives, the two 1/3 anchors are not.
    # gt1 [80, 96], centre 88. L0 nearest: [80,90] (.625) [90,100] (.3) then IoU 0 x3; L1: [80,100] (.8)
    # then 0 x4. mean = .1725, std = .302, threshold = .475: [80,90] and [80,100] (centres 85, 90 inside).
    r = assign_1d(
        [[(10 * i, 10 * i + 10) for i in range(12)], [(20 * i, 20 * i + 20) for i in range(6)]],
        [(10, 30), (80, 96)],
        topk=5,
    )
    expected = [N, 0, 0, N, N, N, N, N, 1, N, N, N] + [N, N, N, N, 1, N]
    assert r.matched_gt.tolist() == expected
    assert r.matched_gt.dtype == torch.long and r.max_iou.dtype == torch.float64
    assert r.positive.tolist() == [m >= 0 for m in expected]
    # Positives carry the IoU with their box; the others their best IoU with any box.
    assert r.max_iou[[1, 2, 8, 16, 9, 12]].tolist() == pytest.approx([0.5, 0.5, 0.625, 0.8, 0.3, 1 / 3])


def test_mean_plus_std_excludes_what_a_fixed_half_would_include() -> None:
    # L0 [0,10] [40,50] [60,70], L1 [-5,10] [40,55] [70,85], topk = 2, gt [0, 10] (centre 5).
    # Candidates: L0 [0,10] (IoU 1), [40,50] (0); L1 [-5,10] (2/3, centre 2.5 inside), [40,55] (0).
    # mean = 5/12, var = (13/9 - 4 * 25/144) / 3 = 1/4, threshold = 5/12 + 1/2 = 11/12:
    # [-5,10] has IoU 2/3 >= 0.5 but is not positive; only [0,10] is.
    r = assign_1d([[(0, 10), (40, 50), (60, 70)], [(-5, 10), (40, 55), (70, 85)]], [(0, 10)], topk=2)
    assert r.matched_gt.tolist() == [0, N, N, N, N, N]
    assert r.max_iou[3].item() == pytest.approx(2 / 3)


def test_mean_plus_std_admits_a_small_box_below_half() -> None:
    # Anchors [0,10] [10,20] [30,40], topk = 3, gt [3, 7] (centre 5, inside [0,10]): IoUs .4, 0, 0.
    # mean = .1333, std = sqrt((.16 - 3 * .1333^2) / 2) = .2309, threshold = .364 <= .4: positive,
    # although a fixed 0.5 threshold would give this box no anchor at all.
    r = assign_1d([[(0, 10), (10, 20), (30, 40)]], [(3, 7)], topk=3)
    assert r.matched_gt.tolist() == [0, N, N]
    assert r.max_iou[0].item() == pytest.approx(0.4)


def test_centre_inside_rule_rejects_a_high_iou_candidate() -> None:
    # One level: Y = [-10, 15] (IoU 10/25 = .4, centre 2.5), X = [0, 20] (IoU .5, centre 10), 7 anchors
    # [40,50] .. [100,110] (IoU 0); topk = 9 takes all nine. gt [0, 10].
    # mean = .9 / 9 = .1, var = (.41 - 9 * .01) / 8 = .04, threshold = .1 + .2 = .3: X and Y both pass, but
    # X's centre lies on the box's right edge (margin 0, not > 0.01), so only Y, the lower IoU, is positive.
    levels = [[(-10, 15), (0, 20)] + [(40 + 10 * i, 50 + 10 * i) for i in range(7)]]
    r = assign_1d(levels, [(0, 10)])
    assert r.matched_gt.tolist() == [0] + [N] * 8
    # Without the margin (a border centre accepted), X becomes positive too: the rule changed the result.
    loose = assign_1d(levels, [(0, 10)], center_eps=-1.0)
    assert loose.matched_gt.tolist() == [0, 0] + [N] * 7


def test_centre_inside_uses_the_y_axis_too() -> None:
    # Two levels of two anchors, topk = 2: all four are candidates. gt [0, 0, 40, 4], a wide flat box.
    # [0, 0, 40, 10]: intersection 160, union 400, IoU .4, centre (20, 5): y = 5 lies above the box.
    # The three far anchors have IoU 0: mean .1, var = (.16 - 4 * .01) / 3 = .04, threshold .3 <= .4,
    # so only the centre rule, on y, rejects it.
    anchors = [
        torch.tensor([[0.0, 0, 40, 10], [100, 0, 140, 10]]),
        torch.tensor([[200.0, 0, 240, 10], [300, 0, 340, 10]]),
    ]
    r = atss_assign(anchors, torch.tensor([[0.0, 0, 40, 4]]), topk=2)
    assert r.matched_gt.tolist() == [N] * 4
    # The same box shifted to [0, 3, 40, 7] contains the centre (margin 2) and keeps IoU .4: positive.
    r = atss_assign(anchors, torch.tensor([[0.0, 3, 40, 7]]), topk=2)
    assert r.matched_gt.tolist() == [0, N, N, N]


def test_anchor_positive_for_two_boxes_goes_to_the_higher_iou() -> None:
    # Anchors X = [5, 15] (centre 10), [100,110], [120,130]; topk = 3 takes all three for each box.
    # gt0 [9, 19]: X IoU 6/14 = .429, centre 10 inside (margin 1); gt1 [2, 12]: X IoU 7/13 = .538, margin 2.
    # With IoUs (x, 0, 0), threshold = x/3 + x/sqrt(3) = .911 x <= x: X is positive for both boxes and goes
    # to gt1, the higher IoU, although gt0 comes first.
    r = assign_1d([[(5, 15), (100, 110), (120, 130)]], [(9, 19), (2, 12)], topk=3)
    assert r.matched_gt.tolist() == [1, N, N]
    assert r.max_iou[0].item() == pytest.approx(7 / 13)


def test_distance_is_euclidean_and_a_lone_candidate_has_zero_std() -> None:
    # One level, topk = 1, gt [-4, -4, 4, 4] (centre 0, 0). A = [-1, -1, 7, 7], centre (3, 3), distance
    # sqrt(18) = 4.24, IoU 25/103; B = [1, -4, 9, 4], centre (5, 0), distance 5, IoU 24/104. A is the only
    # candidate (B would be under an L1 distance: 5 < 6); with one candidate std is 0, so the threshold is
    # A's own IoU, and A's centre is inside: positive. (mmdet's unbiased std would be NaN: no positive.)
    r = atss_assign(
        [torch.tensor([[-1.0, -1, 7, 7], [1, -4, 9, 4]])], torch.tensor([[-4.0, -4, 4, 4]]), topk=1
    )
    assert r.matched_gt.tolist() == [0, N]


@pytest.mark.parametrize("crowd_only", [False, True])
def test_zero_boxes_gives_all_negative(crowd_only: bool) -> None:
    anchors = [boxes_1d((0, 10), (10, 20)), boxes_1d((0, 20))]
    if crowd_only:  # only a crowd box far away: nothing to match, nothing covered
        r = atss_assign(anchors, boxes_1d((100, 200)), gt_ignore=torch.tensor([True]))
    else:
        r = atss_assign(anchors, torch.zeros(0, 4, dtype=torch.float64))
    assert r.matched_gt.tolist() == [N, N, N]
    assert r.max_iou.tolist() == [0.0, 0.0, 0.0]
    empty = atss_assign([torch.zeros(0, 4)], torch.tensor([[0.0, 0, 10, 10]]))
    assert empty.matched_gt.shape == (0,) and empty.max_iou.shape == (0,)


def test_crowd_box_makes_covered_anchors_ignored() -> None:
    # L0: 10 anchors [10i, 10i + 10]; L1: [5,25] [45,65] [80,100] (flat 10..12); topk = 3.
    # gts: 0 = crowd [50, 90], 1 = [0, 10], 2 = [51, 61] (a person annotated inside the crowd region).
    # gt1: IoUs L0 1, 0, 0; L1 [5,25] .2, 0, 0: mean .2, std .4, threshold .6: [0,10] only.
    # gt2: L0 [50,60] 9/11, [60,70] 1/19, [40,50] 0; L1 [45,65] .5, 0, 0: mean .229, std .349,
    # threshold .577: [50,60] only (centre 55 inside); [45,65] (.5) is not.
    # Crowd, IoF = intersection / anchor area > .5: [50,60] (positive for gt2: stays 2), [60,70] [70,80]
    # [80,90] and [45,65] (15/20) are ignored; [40,50] and [90,100] (touching) and [80,100] (IoF 10/20, not
    # above .5) stay -1; [80,100] is no candidate of the real boxes (IoU 0 in any case).
    levels = [[(10 * i, 10 * i + 10) for i in range(10)], [(5, 25), (45, 65), (80, 100)]]
    crowd = torch.tensor([True, False, False])
    r = assign_1d(levels, [(50, 90), (0, 10), (51, 61)], gt_ignore=crowd, topk=3)
    assert r.matched_gt.tolist() == [1, N, N, N, N, 2, IG, IG, IG, N] + [N, IG, N]
    # The crowd box changes no positive: without it the same anchors match the same real boxes.
    plain = assign_1d(levels, [(0, 10), (51, 61)], topk=3)
    assert plain.matched_gt.tolist() == [0, N, N, N, N, 1, N, N, N, N] + [N, N, N]
    assert torch.equal(r.max_iou, plain.max_iou)  # crowd boxes never count as IoU partners


def test_topk_larger_than_level_is_capped() -> None:
    # topk = 9 but the levels hold 4, 2, 1 and 0 anchors: all seven are candidates. gt [0, 10].
    # IoUs: L0 [0,10] 1, three 0; L1 [-1,11] 10/12, [15,35] 0; L2 [-10,30] .25.
    # mean = 2.0833 / 7 = .298, var = (1.7569 - 7 * .298^2) / 6 = .190, threshold = .733:
    # [0,10] and [-1,11] (centre 5 inside) are positives, [-10,30] is not.
    levels = [[(0, 10), (20, 30), (30, 40), (40, 50)], [(-1, 11), (15, 35)], [(-10, 30)], []]
    r = assign_1d(levels, [(0, 10)], topk=9)
    assert r.matched_gt.tolist() == [0, N, N, N, 0, N, N]


def test_bad_arguments() -> None:
    anchors = [torch.tensor([[0.0, 0, 10, 10]])]
    with pytest.raises(ValueError, match="topk"):
        atss_assign(anchors, torch.zeros(0, 4), topk=0)
    with pytest.raises(ValueError, match="gt_boxes"):
        atss_assign(anchors, torch.zeros(4))
    with pytest.raises(ValueError, match="gt_ignore"):
        atss_assign(anchors, torch.zeros(2, 4), gt_ignore=torch.zeros(3, dtype=torch.bool))


# ---------------------------------------------------------------- slow, loop-based reference


def _inter(a: list[float], b: list[float]) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _area(a: list[float]) -> float:
    return (a[2] - a[0]) * (a[3] - a[1])


def _iou(a: list[float], b: list[float]) -> float:
    return _inter(a, b) / (_area(a) + _area(b) - _inter(a, b))


def _reference(levels, gts, crowd, topk):
    """ATSS written out per box and per level, on Python floats."""
    anchors = [a for level in levels for a in level]
    best = [(-1.0, NEGATIVE)] * len(anchors)  # (IoU, gt row) of the best positive so far
    for g, box in enumerate(gts):
        if crowd[g]:
            continue
        gx, gy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        cands, start = [], 0
        for level in levels:
            dists = [math.hypot((a[0] + a[2]) / 2 - gx, (a[1] + a[3]) / 2 - gy) for a in level]
            cands += [start + i for i in sorted(range(len(level)), key=dists.__getitem__)[:topk]]
            start += len(level)
        ious = [_iou(anchors[i], box) for i in cands]
        threshold = statistics.mean(ious) + (statistics.stdev(ious) if len(ious) > 1 else 0.0)
        for i, iou in zip(cands, ious, strict=True):
            cx, cy = (anchors[i][0] + anchors[i][2]) / 2, (anchors[i][1] + anchors[i][3]) / 2
            inside = min(cx - box[0], cy - box[1], box[2] - cx, box[3] - cy) > 0.01
            if iou >= threshold and inside and iou > best[i][0]:
                best[i] = (iou, g)
    matched = [g for _, g in best]
    for i, a in enumerate(anchors):  # not positive and IoF > 0.5 with a crowd box: ignored
        if matched[i] < 0 and any(
            c and _inter(a, box) / _area(a) > 0.5 for box, c in zip(gts, crowd, strict=True)
        ):
            matched[i] = IGNORED
    real_ious = [[_iou(a, box) for box, c in zip(gts, crowd, strict=True) if not c] for a in anchors]
    max_iou = [b[0] if b[1] >= 0 else max(ious, default=0.0) for b, ious in zip(best, real_ious, strict=True)]
    return matched, max_iou


@pytest.mark.parametrize("seed", range(20))
def test_matches_loop_reference_on_random_configurations(seed: int) -> None:
    rng = random.Random(seed)
    height, width = rng.choice([(48, 64), (64, 40), (32, 32)])
    strides = [8, 16, 32][: rng.randint(1, 3)]
    sizes = [(math.ceil(height / s), math.ceil(width / s)) for s in strides]
    grid = anchor_points_and_boxes(
        sizes, strides, octave_base_scale=rng.choice([2, 4, 8]), dtype=torch.float64
    )
    levels = [anchors for _, anchors in grid]
    if seed % 5 == 4:  # irregular anchors: each corner moved by up to 3 px (sizes stay positive)
        levels = [
            a + torch.empty_like(a).uniform_(-3, 3, generator=torch.Generator().manual_seed(seed))
            for a in levels
        ]
    num_gt = 0 if seed == 0 else rng.randint(1, 6)
    gts = []
    for _ in range(num_gt):
        w, h = rng.uniform(2, 40), rng.uniform(2, 40)
        x, y = rng.uniform(-5, width - 2), rng.uniform(-5, height - 2)
        gts.append([x, y, x + w, y + h])
    crowd = [rng.random() < 0.25 for _ in gts]
    topk = rng.choice([1, 3, 9, 40])

    result = atss_assign(
        levels,
        torch.tensor(gts, dtype=torch.float64).reshape(-1, 4),
        gt_ignore=torch.tensor(crowd, dtype=torch.bool),
        topk=topk,
    )
    matched, max_iou = _reference([level.tolist() for level in levels], gts, crowd, topk)
    assert result.matched_gt.tolist() == matched
    assert result.max_iou.tolist() == pytest.approx(max_iou, abs=1e-12)
