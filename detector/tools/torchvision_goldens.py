"""Reference outputs of torchvision's box ops for the detector's Rust tests.

Writes ``tests/golden/torchvision_ops.json`` (read by ``tests/torchvision_ops.rs``) with cases
for ``box_iou``, ``clip_boxes_to_image``, ``remove_small_boxes``, the Faster R-CNN box coder
(``BoxCoder.decode_single`` / ``encode_single``), ``nms``, ``batched_nms`` and ``roi_align``.
Everything runs on CPU in float32 from a fixed seed; the torch, torchvision and numpy versions
are recorded under ``"meta"``.

Regenerate from the crate root (any recent torch/torchvision; a CPU-only build is enough):

    python3 -m venv venv && venv/bin/pip install torch torchvision numpy
    venv/bin/python tools/torchvision_goldens.py

Notes on the data:
* Inputs are float32 and written as the shortest decimal that parses back to the same float32,
  so Rust sees bit-identical inputs. Feature maps are multiples of 1/16 in [-2, 2].
* torch's CPU sort is stable only up to 16 elements, so torchvision's order among equal scores
  is unspecified for larger inputs: cases with tied scores have at most 16 boxes, larger ones
  have distinct scores.
* torchvision compares the float32 IoU with a float64 threshold; the Rust port uses a float32
  threshold. The script asserts no IoU equals a threshold that rounds up in float32, the only
  place where the two differ.
* ``box_iou`` gives NaN (0/0) for a zero union; the Rust ``iou`` returns 0 there, so those
  entries are stored as 0 (the script asserts NaN appears only for zero unions).
* The decode formula is written out below (detectron2 ``Box2BoxTransform.apply_deltas``) and
  checked against torchvision's ``BoxCoder.decode_single`` before torchvision's output is stored.
"""

import json
import math
import pathlib

import numpy as np
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, nms, remove_small_boxes
from torchvision.ops import roi_align
from torchvision.ops.boxes import _batched_nms_vanilla

SEED = 20240611
OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "golden" / "torchvision_ops.json"

rng = np.random.default_rng(SEED)
torch.manual_seed(SEED)


def f32(values):
    """Float32 tensor/array -> flat list of floats that round-trip to the same float32."""
    arr = np.asarray(values, dtype=np.float32).ravel()
    out = [float(str(v)) for v in arr]
    assert np.array_equal(np.asarray(out, dtype=np.float32), arr, equal_nan=True)
    return out


def t32(values):
    """Round-trip through f32() so torch sees exactly the values written to the JSON."""
    arr = np.asarray(values, dtype=np.float32)
    return torch.tensor(f32(arr), dtype=torch.float32).reshape(arr.shape)


def boxes_list(t):
    return [f32(b) for b in t.reshape(-1, 4)]


def random_boxes(n, extent, min_size, max_size):
    xy = rng.uniform(0.0, extent, size=(n, 2))
    wh = rng.uniform(min_size, max_size, size=(n, 2))
    return t32(np.concatenate([xy, xy + wh], axis=1))


def quantized_boxes(n, extent, step):
    """Boxes on a `step` grid, with some zero-size and inverted ones."""
    xy = rng.integers(0, int(extent / step), size=(n, 2)) * step
    wh = rng.integers(-1, int(extent / step), size=(n, 2)) * step
    return t32(np.concatenate([xy, xy + wh], axis=1))


def distinct_scores(n):
    return t32(rng.permutation(n) / n + rng.uniform(0.0, 0.5 / n, size=n))


def check_threshold_edge(boxes, thresholds):
    """Assert no IoU hits a threshold whose float32 rounding went up (see module doc)."""
    ious = box_iou(boxes, boxes)
    for t in thresholds:
        t32_ = np.float32(t)
        if float(t32_) > t:
            assert not bool((ious == float(t32_)).any()), f"IoU equals f32({t})"


# ---------------------------------------------------------------- box_iou
def iou_case(b1, b2):
    iou = box_iou(b1, b2)
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    lt = torch.max(b1[:, None, :2], b2[None, :, :2])
    rb = torch.min(b1[:, None, 2:], b2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    union = area1[:, None] + area2[None, :] - wh[..., 0] * wh[..., 1]
    nan = torch.isnan(iou)
    assert bool((union[nan] == 0).all()), "NaN IoU with non-zero union"
    iou = torch.where(nan, torch.zeros_like(iou), iou)
    return {"boxes1": boxes_list(b1), "boxes2": boxes_list(b2), "iou": f32(iou)}


special = t32(
    [
        [0, 0, 2, 2],
        [1, 1, 3, 3],
        [2, 0, 4, 2],  # touches [0] on an edge
        [1, 1, 1, 1],  # point
        [1, 1, 1, 3],  # zero width
        [3, 3, 1, 1],  # inverted
        [0, 0, 2, 2],  # duplicate of [0]
    ]
)
box_iou_cases = [
    iou_case(random_boxes(12, 50.0, 0.5, 30.0), random_boxes(10, 50.0, 0.5, 30.0)),
    iou_case(special, torch.cat([special, quantized_boxes(6, 4.0, 0.5)])),
]

# ---------------------------------------------------------------- clip / remove_small
clip_cases = []
for height, width in [(480, 640), (37.5, 20.25), (1, 1)]:
    b = t32(rng.uniform(-0.3, 1.3, size=(12, 4)) * np.array([width, height, width, height]))
    clipped = clip_boxes_to_image(b, (height, width))
    clip_cases.append(
        {"height": height, "width": width, "boxes": boxes_list(b), "clipped": boxes_list(clipped)}
    )

remove_small_cases = []
small = torch.cat([quantized_boxes(20, 8.0, 0.5), random_boxes(10, 20.0, 0.0, 3.0)])
for min_size in [0.0, 0.5, 1.0, 2.5, 10.0]:
    keep = remove_small_boxes(small, min_size)
    remove_small_cases.append(
        {"boxes": boxes_list(small), "min_size": min_size, "keep": keep.tolist()}
    )


# ---------------------------------------------------------------- box coder
def decode_d2(reference, deltas, weights, scale_clamp):
    """detectron2 Box2BoxTransform.apply_deltas, written out (float32 torch ops)."""
    wx, wy, ww, wh = weights
    widths = reference[:, 2] - reference[:, 0]
    heights = reference[:, 3] - reference[:, 1]
    ctr_x = reference[:, 0] + 0.5 * widths
    ctr_y = reference[:, 1] + 0.5 * heights
    dx = deltas[:, 0] / wx
    dy = deltas[:, 1] / wy
    dw = torch.clamp(deltas[:, 2] / ww, max=scale_clamp)
    dh = torch.clamp(deltas[:, 3] / wh, max=scale_clamp)
    pred_ctr_x = dx * widths + ctr_x
    pred_ctr_y = dy * heights + ctr_y
    pred_w = torch.exp(dw) * widths
    pred_h = torch.exp(dh) * heights
    return torch.stack(
        [
            pred_ctr_x - 0.5 * pred_w,
            pred_ctr_y - 0.5 * pred_h,
            pred_ctr_x + 0.5 * pred_w,
            pred_ctr_y + 0.5 * pred_h,
        ],
        dim=1,
    )


SCALE_CLAMP = math.log(1000.0 / 16)
coder_cases = []
for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 0.5, 1.5, 3.0)]:
    reference = random_boxes(40, 500.0, 0.5, 300.0)
    deltas = rng.normal(0.0, 1.0, size=(40, 4)) * np.array(weights) * 0.5
    deltas[:6, 2:] = rng.uniform(4.0, 12.0, size=(6, 2)) * np.array(weights[2:])  # hit the clamp
    deltas = t32(deltas)
    coder = BoxCoder(weights, bbox_xform_clip=SCALE_CLAMP)
    decoded = coder.decode_single(deltas, reference)
    mine = decode_d2(reference, deltas, weights, SCALE_CLAMP)
    torch.testing.assert_close(mine, decoded, rtol=1e-6, atol=1e-5)
    # Targets near the references (size ratios well inside the clamp), so encode inverts decode.
    ref = reference.numpy().astype(np.float64)
    size = ref[:, 2:] - ref[:, :2]
    centre = ref[:, :2] + 0.5 * size + rng.normal(0.0, 0.3, size=(40, 2)) * size
    size = size * np.exp(rng.normal(0.0, 0.5, size=(40, 2)))
    targets = t32(np.concatenate([centre - 0.5 * size, centre + 0.5 * size], axis=1))
    # encode_single(reference_boxes=targets, proposals=reference): deltas of targets w.r.t. reference.
    encoded = coder.encode_single(targets, reference)
    torch.testing.assert_close(coder.decode_single(encoded, reference), targets, rtol=1e-4, atol=1e-3)
    coder_cases.append(
        {
            "weights": list(weights),
            "reference": boxes_list(reference),
            "deltas": boxes_list(deltas),
            "decoded": boxes_list(decoded),
            "targets": boxes_list(targets),
            "encoded": boxes_list(encoded),
        }
    )

# ---------------------------------------------------------------- nms / batched_nms
nms_cases = []


def add_nms(name, boxes, scores, thresholds):
    n = boxes.shape[0]
    assert n <= 16 or len(set(scores.tolist())) == n, "ties need <= 16 boxes (torch sort)"
    check_threshold_edge(boxes, thresholds)
    for t in thresholds:
        keep = nms(boxes, scores, t)
        nms_cases.append(
            {
                "name": name,
                "boxes": boxes_list(boxes),
                "scores": f32(scores),
                "iou_threshold": t,
                "keep": keep.tolist(),
            }
        )


add_nms("random", random_boxes(200, 200.0, 1.0, 80.0), distinct_scores(200), [0.3, 0.5, 0.7])
centres = rng.uniform(0.0, 100.0, size=(10, 2))
cluster_xy = centres[rng.integers(0, 10, size=120)] + rng.normal(0.0, 2.0, size=(120, 2))
cluster_wh = rng.uniform(10.0, 20.0, size=(120, 2))
add_nms(
    "clustered",
    t32(np.concatenate([cluster_xy, cluster_xy + cluster_wh], axis=1)),
    distinct_scores(120),
    [0.0, 0.45, 0.6, 0.9, 1.0],
)
for i in range(6):
    add_nms(
        f"quantized_ties_{i}",
        quantized_boxes(16, 8.0, 0.5),
        t32(rng.integers(1, 4, size=16) / 4.0),
        [0.0, 0.25, 0.5, 0.7, 1.0],
    )
# Equal scores; IoUs exactly 0.5 ([0]-[1], [1]-[2]), 0.25, 2/3, 0.75 and 1 (duplicate).
add_nms(
    "exact_iou",
    t32([[0, 0, 1, 1], [0, 0, 2, 1], [1, 0, 2, 1], [0, 0, 1.5, 1], [0, 0, 2, 1]]),
    t32([0.5, 0.5, 0.5, 0.5, 0.5]),
    [1.0 / 3.0, 0.5, 0.6],
)
add_nms("empty", torch.zeros((0, 4)), torch.zeros((0,)), [0.5])

batched_cases = []


def add_batched(name, boxes, scores, classes, thresholds):
    n = boxes.shape[0]
    assert n <= 16 or len(set(scores.tolist())) == n, "ties need <= 16 boxes (torch sort)"
    check_threshold_edge(boxes, thresholds)
    for t in thresholds:
        keep = batched_nms(boxes, scores, classes, t)
        vanilla = _batched_nms_vanilla(boxes, scores, classes, t)
        assert torch.equal(keep, vanilla), "coordinate trick differs from per-class NMS"
        batched_cases.append(
            {
                "name": name,
                "boxes": boxes_list(boxes),
                "scores": f32(scores),
                "classes": classes.tolist(),
                "iou_threshold": t,
                "keep": keep.tolist(),
            }
        )


# Coordinates on a 1/4 grid keep the coordinate-offset trick exact.
add_batched(
    "five_classes",
    t32(np.round(random_boxes(150, 30.0, 4.0, 20.0).numpy() * 4) / 4),
    distinct_scores(150),
    torch.tensor(rng.integers(0, 5, size=150)),
    [0.3, 0.5, 0.7],
)
# More than 1000 boxes: torchvision switches to its per-class loop.
add_batched(
    "vanilla_path",
    t32(np.round(random_boxes(1200, 40.0, 5.0, 30.0).numpy() * 4) / 4),
    distinct_scores(1200),
    torch.tensor(rng.integers(0, 20, size=1200)),
    [0.5],
)
add_batched(
    "ties",
    quantized_boxes(14, 6.0, 0.5),
    t32(rng.integers(1, 3, size=14) / 2.0),
    torch.tensor(rng.integers(0, 3, size=14)),
    [0.0, 0.5],
)


# ---------------------------------------------------------------- roi_align
def roi_boxes(k, img_h, img_w):
    """Mixed boxes in image pixels: inside, partly/fully outside, tiny, huge, degenerate."""
    out = []
    for i in range(k):
        kind = i % 8
        if kind in (0, 1):  # inside
            x1, y1 = rng.uniform(0, img_w * 0.7), rng.uniform(0, img_h * 0.7)
            x2 = x1 + rng.uniform(1, img_w - x1)
            y2 = y1 + rng.uniform(1, img_h - y1)
        elif kind == 2:  # partly outside on the top-left
            x1, y1 = rng.uniform(-0.5 * img_w, 0), rng.uniform(-0.5 * img_h, 0)
            x2, y2 = rng.uniform(0.1 * img_w, 0.6 * img_w), rng.uniform(0.1 * img_h, 0.6 * img_h)
        elif kind == 3:  # partly outside on the bottom-right
            x1, y1 = rng.uniform(0.4 * img_w, img_w), rng.uniform(0.4 * img_h, img_h)
            x2, y2 = x1 + rng.uniform(0.3, 0.8) * img_w, y1 + rng.uniform(0.3, 0.8) * img_h
        elif kind == 4:  # fully outside (far or just beyond the -1 / size sample limit)
            x1 = rng.choice([-3.0 * img_w, 1.1 * img_w])
            y1 = rng.uniform(-0.2 * img_h, img_h)
            x2, y2 = x1 + rng.uniform(0.05, 0.5) * img_w, y1 + rng.uniform(1, 0.5 * img_h)
        elif kind == 5:  # tiny
            x1, y1 = rng.uniform(0, img_w), rng.uniform(0, img_h)
            x2, y2 = x1 + rng.uniform(0.01, 0.5), y1 + rng.uniform(0.01, 0.5)
        elif kind == 6:  # huge
            x1, y1 = rng.uniform(-1.5 * img_w, 0), rng.uniform(-1.5 * img_h, 0)
            x2, y2 = rng.uniform(1.2, 3.0) * img_w, rng.uniform(1.2, 3.0) * img_h
        else:  # degenerate: point or inverted
            x1, y1 = rng.uniform(0, img_w), rng.uniform(0, img_h)
            if rng.random() < 0.5:
                x2, y2 = x1, y1
            else:
                x2, y2 = x1 - rng.uniform(0.5, 20), y1 - rng.uniform(0.5, 20)
        out.append([x1, y1, x2, y2])
    return out


roi_align_cases = []


def add_roi_align(
    name, n, c, h, w, scale, out_hw, sampling_ratio, aligned, k, features=None, boxes=None
):
    if features is None:
        features = t32(rng.integers(-32, 33, size=(n, c, h, w)) / 16.0)
    img_h, img_w = h / scale, w / scale
    boxes = t32(roi_boxes(k, img_h, img_w) if boxes is None else boxes)
    batch = torch.tensor(rng.integers(0, n, size=(k, 1)), dtype=torch.float32)
    rois = torch.cat([batch, boxes], dim=1)
    out = roi_align(features, rois, out_hw, scale, sampling_ratio, aligned)
    roi_align_cases.append(
        {
            "name": name,
            "shape": [n, c, h, w],
            "features": f32(features),
            "rois": [[int(r[0])] + f32(r[1:]) for r in rois],
            "output_height": out_hw[0],
            "output_width": out_hw[1],
            "spatial_scale": scale,
            "sampling_ratio": sampling_ratio,
            "aligned": aligned,
            "output": f32(out),
        }
    )
    return features


shared = add_roi_align("stride4_7x7_legacy", 1, 3, 16, 16, 1 / 4, (7, 7), 0, False, 10)
add_roi_align("stride4_7x7_aligned", 1, 3, 16, 16, 1 / 4, (7, 7), 0, True, 10, features=shared)
shared = add_roi_align("stride16_batch2_sr2_aligned", 2, 4, 12, 20, 1 / 16, (7, 7), 2, True, 12)
add_roi_align("stride16_batch2_sr0_legacy", 2, 4, 12, 20, 1 / 16, (7, 7), 0, False, 12, shared)
add_roi_align("stride4_batch2_14x14_legacy", 2, 5, 24, 24, 1 / 4, (14, 14), 0, False, 8)
add_roi_align("stride16_batch2_14x14_sr2_aligned", 2, 3, 18, 24, 1 / 16, (14, 14), 2, True, 8)
add_roi_align("stride4_c8_aligned", 1, 8, 10, 14, 1 / 4, (7, 7), 0, True, 10)
add_roi_align("scale1_3x5_aligned", 2, 4, 9, 13, 1.0, (3, 5), 0, True, 16)
add_roi_align("scale1_3x5_sr2_legacy", 2, 4, 9, 13, 1.0, (3, 5), 2, False, 16)
add_roi_align("stride16_huge_14x14_aligned", 1, 3, 20, 20, 1 / 16, (14, 14), 0, True, 7)
# One sample per box (1x1 boxes, legacy mode) at x1 + 0.5, y1 + 0.5: exactly on the validity
# limits -1 and size (kept, clamped) and just beyond them (dropped).
edges = [(-1.5, 1.0), (-1.5001, 1.0), (4.5, 1.0), (4.5001, 1.0), (1.0, -1.5), (1.0, -1.5001),
         (1.0, 3.5), (1.0, 3.5001), (-1.5, 3.5), (4.5, -1.5), (-0.5, -0.5), (3.5, 2.5)]
add_roi_align(
    "sample_limits", 1, 2, 4, 5, 1.0, (1, 1), 1, False, len(edges),
    boxes=[[x, y, x + 1, y + 1] for x, y in edges],
)

# ---------------------------------------------------------------- write
golden = {
    "meta": {
        "generator": "tools/torchvision_goldens.py",
        "seed": SEED,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "scale_clamp": SCALE_CLAMP,
    },
    "box_iou": box_iou_cases,
    "clip_boxes_to_image": clip_cases,
    "remove_small_boxes": remove_small_cases,
    "box_coder": coder_cases,
    "nms": nms_cases,
    "batched_nms": batched_cases,
    "roi_align": roi_align_cases,
}
OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(json.dumps(golden, separators=(",", ":")) + "\n")
print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")
