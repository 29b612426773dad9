#!/usr/bin/env python3
"""Golden outputs of a tiny bottom-up-attention (BUTD) detector for `tests/butd_tiny.rs`.

    /path/to/venv/bin/python tools/butd_reference.py [--photos DIR] [--out tests/golden]

Needs numpy, Pillow, torch and torchvision (CPU). It

1. builds a tiny model with the structure and detectron2 key names of the released BUTD model
   (airsplay/py-bottom-up-attention, `faster_rcnn_R_101_C4_attr_caffemaxpool.yaml`): caffe
   ResNet C4 with frozen BN, RPN with hidden conv, `Res5ROIHeads` with `RES5HALVE: False`,
   `FastRCNNOutputLayers` with the attribute branch; random weights from a fixed seed, widths
   and depths of `ButdConfig::tiny()`;
2. saves it as a detectron2-style pickle (`{"model": {key: ndarray}, "__author__": ...}`,
   protocol 2) -> `butd_tiny.pkl`, and its safetensors conversion -> `butd_tiny.safetensors`
   (with `butd_to_safetensors.py`, for machines without numpy);
3. runs the forward pass written with plain torch + torchvision ops on two small real photos,
   following detectron2's inference code step by step (PIL bilinear `ResizeShortestEdge`, BGR
   minus caffe means, `BasicStem` with caffe max pool, `BottleneckBlock` with stride in the 1x1,
   `StandardRPNHead`, `DefaultAnchorGenerator`, `find_top_rpn_proposals`, `ROIPool` 14x14,
   `res5` with dilation 2, mean pool, box predictor + attribute branch), then the region
   selection of bottom-up-attention's `tools/generate_tsv.py`;
4. writes every intermediate to `butd_tiny.json` (full values for small tensors, summary
   statistics and an evenly strided subset for large ones).
"""

import argparse
import json
import math
import os
import pickle
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import butd_to_safetensors  # noqa: E402

# Must equal `ButdConfig::tiny()` (the test compares them field by field).
CONFIG = {
    "stem_out_channels": 8,
    "res2_out_channels": 16,
    "res2_bottleneck_channels": 4,
    "blocks_per_stage": [1, 2, 2],
    "res5_blocks": 2,
    "bn_eps": 1e-5,
    "rpn_hidden_channels": 16,
    "anchor_sizes": [16.0, 32.0, 64.0, 128.0],
    "anchor_aspect_ratios": [0.5, 1.0, 2.0],
    "rpn_pre_nms_topk": 200,
    "rpn_post_nms_topk": 40,
    "rpn_nms_threshold": 0.7,
    "rpn_min_box_size": 0.0,
    "pooler_resolution": 14,
    "num_classes": 10,
    "num_attributes": 6,
    "box_reg_weights": [10.0, 10.0, 5.0, 5.0],
    "nms_threshold": 0.3,
    "conf_threshold": 0.2,
    "min_boxes": 10,
    "max_boxes": 100,
    "pixel_mean_bgr": [102.9801, 115.9465, 122.7717],
    "min_size": 96,
    "max_size": 160,
}
FEATURE_STRIDE = 16
SCALE_CLAMP = math.log(1000.0 / 16)
# (photo, size of the "original" image handed to the detector): one upscaled, one downscaled.
PHOTOS = [("astronaut.png", (80, 80)), ("chelsea.png", (180, 120))]
SEED = 20240607


# ---------------------------------------------------------------- weights


def make_weights(cfg, rng):
    """Random weights under detectron2 names; BN statistics far from identity."""
    w = {}

    def conv_bn(prefix, cin, cout, k):
        w[prefix + ".weight"] = rng.normal(0.0, math.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k))
        w[prefix + ".norm.weight"] = rng.uniform(0.5, 1.5, cout)
        w[prefix + ".norm.bias"] = rng.normal(0.0, 0.2, cout)
        w[prefix + ".norm.running_mean"] = rng.normal(0.0, 0.2, cout)
        w[prefix + ".norm.running_var"] = rng.uniform(0.5, 2.0, cout)

    def block(prefix, cin, bottleneck, cout):
        if cin != cout:
            conv_bn(prefix + ".shortcut", cin, cout, 1)
        conv_bn(prefix + ".conv1", cin, bottleneck, 1)
        conv_bn(prefix + ".conv2", bottleneck, bottleneck, 3)
        conv_bn(prefix + ".conv3", bottleneck, cout, 1)
        # Keep the residual branch from dominating so the signal stays O(1) through the stages.
        w[prefix + ".conv3.norm.weight"] *= 0.5

    def linear(prefix, din, dout, std):
        w[prefix + ".weight"] = rng.normal(0.0, std, (dout, din))
        w[prefix + ".bias"] = rng.normal(0.0, 0.1, dout)

    conv_bn("backbone.stem.conv1", 3, cfg["stem_out_channels"], 7)
    # The input is in pixel units (about +-100): scale the stem down to O(1) activations.
    w["backbone.stem.conv1.weight"] /= 60.0
    cin, cout, bott = cfg["stem_out_channels"], cfg["res2_out_channels"], cfg["res2_bottleneck_channels"]
    for idx, n in enumerate(cfg["blocks_per_stage"]):
        for i in range(n):
            block(f"backbone.res{idx + 2}.{i}", cin if i == 0 else cout, bott, cout)
        cin, cout, bott = cout, cout * 2, bott * 2
    res4, hidden = cin, cfg["rpn_hidden_channels"]
    a = len(cfg["anchor_sizes"]) * len(cfg["anchor_aspect_ratios"])
    p = "proposal_generator.rpn_head"
    w[p + ".conv.weight"] = rng.normal(0.0, math.sqrt(2.0 / (res4 * 9)), (hidden, res4, 3, 3))
    w[p + ".conv.bias"] = rng.normal(0.0, 0.1, hidden)
    w[p + ".objectness_logits.weight"] = rng.normal(0.0, 1.0 / math.sqrt(hidden), (a, hidden, 1, 1))
    w[p + ".objectness_logits.bias"] = rng.normal(0.0, 0.5, a)
    w[p + ".anchor_deltas.weight"] = rng.normal(0.0, 0.2 / math.sqrt(hidden), (4 * a, hidden, 1, 1))
    w[p + ".anchor_deltas.bias"] = rng.normal(0.0, 0.05, 4 * a)
    d = cout
    for i in range(cfg["res5_blocks"]):
        block(f"roi_heads.res5.{i}", res4 if i == 0 else d, bott, d)
    k, na = cfg["num_classes"], cfg["num_attributes"]
    p = "roi_heads.box_predictor"
    linear(p + ".cls_score", d, k + 1, 3.0 / math.sqrt(d))
    linear(p + ".bbox_pred", d, 4 * k, 0.5 / math.sqrt(d))
    w[p + ".cls_embedding.weight"] = rng.normal(0.0, 1.0, (k + 1, d // 8))
    linear(p + ".fc_attr", d + d // 8, d // 4, math.sqrt(2.0 / (d + d // 8)))
    linear(p + ".attr_score", d // 4, na + 1, 2.0 / math.sqrt(d // 4))
    # The anchor buffer a full detectron2 state_dict carries (`BufferList` of cell anchors).
    w["proposal_generator.anchor_generator.cell_anchors.0"] = cell_anchors(cfg).numpy()
    return {key: np.asarray(v, dtype=np.float32) for key, v in w.items()}


# ---------------------------------------------------------------- forward (detectron2 order)


def frozen_bn(x, w, prefix, eps):
    return F.batch_norm(
        x,
        w[prefix + ".norm.running_mean"],
        w[prefix + ".norm.running_var"],
        w[prefix + ".norm.weight"],
        w[prefix + ".norm.bias"],
        training=False,
        eps=eps,
    )


def conv_bn(x, w, prefix, eps, stride=1, padding=0, dilation=1):
    x = F.conv2d(x, w[prefix + ".weight"], None, stride, padding, dilation)
    return frozen_bn(x, w, prefix, eps)


def bottleneck(x, w, prefix, eps, stride, dilation):
    """detectron2 `BottleneckBlock` with `stride_in_1x1=True`."""
    out = F.relu(conv_bn(x, w, prefix + ".conv1", eps, stride=stride))
    out = F.relu(conv_bn(out, w, prefix + ".conv2", eps, padding=dilation, dilation=dilation))
    out = conv_bn(out, w, prefix + ".conv3", eps)
    if prefix + ".shortcut.weight" in w:
        shortcut = conv_bn(x, w, prefix + ".shortcut", eps, stride=stride)
    else:
        shortcut = x
    return F.relu(out + shortcut)


def backbone(x, w, cfg):
    eps = cfg["bn_eps"]
    out = {}
    x = F.relu(conv_bn(x, w, "backbone.stem.conv1", eps, stride=2, padding=3))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)
    out["stem"] = x
    for idx, n in enumerate(cfg["blocks_per_stage"]):
        for i in range(n):
            stride = 2 if (i == 0 and idx > 0) else 1
            x = bottleneck(x, w, f"backbone.res{idx + 2}.{i}", eps, stride, 1)
        out[f"res{idx + 2}"] = x
    return out


def cell_anchors(cfg):
    anchors = []
    for size in cfg["anchor_sizes"]:
        area = size**2.0
        for ratio in cfg["anchor_aspect_ratios"]:
            aw = math.sqrt(area / ratio)
            ah = ratio * aw
            anchors.append([-aw / 2.0, -ah / 2.0, aw / 2.0, ah / 2.0])
    return torch.tensor(anchors).float()


def apply_deltas(deltas, boxes, weights):
    """detectron2 `Box2BoxTransform.apply_deltas`."""
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    dw = torch.clamp(deltas[:, 2::4] / ww, max=SCALE_CLAMP)
    dh = torch.clamp(deltas[:, 3::4] / wh, max=SCALE_CLAMP)
    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    pred_w = torch.exp(dw) * widths[:, None]
    pred_h = torch.exp(dh) * heights[:, None]
    out = torch.zeros_like(deltas)
    out[:, 0::4] = pred_ctr_x - 0.5 * pred_w
    out[:, 1::4] = pred_ctr_y - 0.5 * pred_h
    out[:, 2::4] = pred_ctr_x + 0.5 * pred_w
    out[:, 3::4] = pred_ctr_y + 0.5 * pred_h
    return out


def clip(boxes, h, w):
    boxes = boxes.clone()
    boxes[:, 0].clamp_(min=0, max=w)
    boxes[:, 1].clamp_(min=0, max=h)
    boxes[:, 2].clamp_(min=0, max=w)
    boxes[:, 3].clamp_(min=0, max=h)
    return boxes


def rpn(res4, w, cfg, image_h, image_w):
    p = "proposal_generator.rpn_head"
    t = F.relu(F.conv2d(res4, w[p + ".conv.weight"], w[p + ".conv.bias"], padding=1))
    logits = F.conv2d(t, w[p + ".objectness_logits.weight"], w[p + ".objectness_logits.bias"])
    deltas = F.conv2d(t, w[p + ".anchor_deltas.weight"], w[p + ".anchor_deltas.bias"])
    n, a, fh, fw = logits.shape
    # DefaultAnchorGenerator.grid_anchors
    shifts_x = torch.arange(0, fw * FEATURE_STRIDE, step=FEATURE_STRIDE, dtype=torch.float32)
    shifts_y = torch.arange(0, fh * FEATURE_STRIDE, step=FEATURE_STRIDE, dtype=torch.float32)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
    anchors = (shifts.view(-1, 1, 4) + cell_anchors(cfg).view(1, -1, 4)).reshape(-1, 4)
    # RPNOutputs.predict_proposals / predict_objectness_logits
    flat_deltas = deltas.view(n, -1, 4, fh, fw).permute(0, 3, 4, 1, 2).reshape(-1, 4)
    proposals = apply_deltas(flat_deltas, anchors, (1.0, 1.0, 1.0, 1.0))
    scores = logits.permute(0, 2, 3, 1).reshape(-1)
    # find_top_rpn_proposals (one image, one level)
    k = min(cfg["rpn_pre_nms_topk"], scores.numel())
    scores_sorted, idx = scores.sort(descending=True, stable=True)
    scores_k, boxes_k = scores_sorted[:k], proposals[idx[:k]]
    boxes_k = clip(boxes_k, image_h, image_w)
    widths = boxes_k[:, 2] - boxes_k[:, 0]
    heights = boxes_k[:, 3] - boxes_k[:, 1]
    keep = (widths > cfg["rpn_min_box_size"]) & (heights > cfg["rpn_min_box_size"])
    boxes_k, scores_k = boxes_k[keep], scores_k[keep]
    keep = torchvision.ops.nms(boxes_k, scores_k, cfg["rpn_nms_threshold"])
    keep = keep[: cfg["rpn_post_nms_topk"]]
    return logits, deltas, boxes_k[keep], scores_k[keep]


def roi_heads(res4, boxes, w, cfg):
    eps = cfg["bn_eps"]
    res = cfg["pooler_resolution"]
    pooled = torchvision.ops.roi_pool(res4, [boxes], output_size=(res, res), spatial_scale=1.0 / FEATURE_STRIDE)
    x = pooled
    for i in range(cfg["res5_blocks"]):
        # RES5HALVE False: stride 1 everywhere, conv2 dilation 2 / padding 2.
        x = bottleneck(x, w, f"roi_heads.res5.{i}", eps, 1, 2)
    features = x.mean(dim=[2, 3])
    p = "roi_heads.box_predictor"
    class_logits = F.linear(features, w[p + ".cls_score.weight"], w[p + ".cls_score.bias"])
    box_deltas = F.linear(features, w[p + ".bbox_pred.weight"], w[p + ".bbox_pred.bias"])
    _, max_class = class_logits.max(-1)
    emb = F.embedding(max_class, w[p + ".cls_embedding.weight"])
    h = F.relu(F.linear(torch.cat([features, emb], -1), w[p + ".fc_attr.weight"], w[p + ".fc_attr.bias"]))
    attr_logits = F.linear(h, w[p + ".attr_score.weight"], w[p + ".attr_score.bias"])
    return pooled, features, class_logits, box_deltas, attr_logits


def select(boxes, probs, cfg):
    """bottom-up-attention `generate_tsv.py`: per-class NMS, max confidence, 10..100 boxes.

    Also records which class gave each box its confidence (strictly greater wins, so the lowest
    class index on ties), which `generate_tsv.py` does not output."""
    num_classes = cfg["num_classes"]
    scores = probs.numpy()
    max_conf = np.zeros(boxes.shape[0], dtype=np.float32)
    best = np.full(boxes.shape[0], -1)
    for cls_ind in range(num_classes):  # background is last in detectron2's layout
        cls_scores = scores[:, cls_ind]
        keep = torchvision.ops.nms(boxes, probs[:, cls_ind].contiguous(), cfg["nms_threshold"]).numpy()
        better = cls_scores[keep] > max_conf[keep]
        best[keep[better]] = cls_ind
        max_conf[keep] = np.where(better, cls_scores[keep], max_conf[keep])
    keep_boxes = np.where(max_conf >= cfg["conf_threshold"])[0]
    if len(keep_boxes) < cfg["min_boxes"]:
        keep_boxes = np.argsort(-max_conf, kind="stable")[: cfg["min_boxes"]]
    elif len(keep_boxes) > cfg["max_boxes"]:
        keep_boxes = np.argsort(-max_conf, kind="stable")[: cfg["max_boxes"]]
    classes = np.where(best[keep_boxes] >= 0, best[keep_boxes], scores[keep_boxes, :num_classes].argmax(1))
    return keep_boxes, classes, max_conf[keep_boxes], max_conf


# ---------------------------------------------------------------- golden encoding


def encode(t, limit=1500):
    """Shape, statistics and an evenly strided subset (every value when small)."""
    a = np.asarray(t, dtype=np.float64).reshape(-1)
    stride = max(1, math.ceil(a.size / limit))
    return {
        "shape": list(np.asarray(t).shape),
        "mean": float(a.mean()),
        "abs_mean": float(np.abs(a).mean()),
        "min": float(a.min()),
        "max": float(a.max()),
        "stride": stride,
        "values": [float(f"{v:.8g}") for v in a[::stride]],
    }


def rounded(values):
    return [float(f"{v:.8g}") for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def run_image(name, rgb, w, cfg):
    h0, w0 = rgb.shape[:2]
    x, newh, neww, resized_bgr = preprocess(rgb, cfg)

    feats = backbone(x, w, cfg)
    logits, deltas, proposals, proposal_logits = rpn(feats["res4"], w, cfg, newh, neww)
    pooled, features, class_logits, box_deltas, attr_logits = roi_heads(feats["res4"], proposals, w, cfg)
    probs = F.softmax(class_logits, -1)
    keep, classes, confs, all_conf = select(proposals, probs, cfg)
    conf_sorted = np.sort(all_conf)[::-1]
    print(f"{name}: input {newh}x{neww}, {len(proposals)} proposals, kept {len(keep)}, "
          f"confidences {np.round(conf_sorted[:12], 3).tolist()}")

    attr_prob = F.softmax(attr_logits[:, :-1], -1)
    attr_score, attr_id = attr_prob.max(-1)
    k = torch.as_tensor(keep, dtype=torch.long)
    cls = torch.as_tensor(classes, dtype=torch.long)
    refined = apply_deltas(box_deltas[k], proposals[k], cfg["box_reg_weights"])
    refined = refined.view(len(keep), -1, 4)[torch.arange(len(keep)), cls]
    refined = clip(refined, newh, neww)
    sx, sy = w0 / neww, h0 / newh

    def to_original(b):
        b = b.clone()
        b[:, 0::2] *= sx
        b[:, 1::2] *= sy
        return clip(b, h0, w0)

    return {
        "name": name,
        "width": w0,
        "height": h0,
        "rgb": rgb.reshape(-1).tolist(),
        "resized": {"width": neww, "height": newh, "rgb": resized_bgr[:, :, ::-1].reshape(-1).tolist()},
        "tensors": {
            "input": encode(x),
            "stem": encode(feats["stem"]),
            "res2": encode(feats["res2"]),
            "res3": encode(feats["res3"]),
            "res4": encode(feats["res4"]),
            "rpn_logits": encode(logits),
            "rpn_deltas": encode(deltas),
            "pooled": encode(pooled),
            "features": encode(features),
            "class_logits": encode(class_logits),
            "box_deltas": encode(box_deltas),
            "attribute_logits": encode(attr_logits),
        },
        "proposals": {"boxes": rounded(proposals), "logits": rounded(proposal_logits)},
        "detections": {
            "indices": keep.tolist(),
            "boxes": rounded(to_original(proposals[k])),
            "refined_boxes": rounded(to_original(refined)),
            "class_ids": classes.tolist(),
            "class_scores": rounded(confs),
            "attribute_ids": attr_id[k].tolist(),
            "attribute_scores": rounded(attr_score[k]),
            "features": rounded(features[k]),
        },
    }


def head_inputs(weights, inputs, cfg):
    """Pooled features and attribute hidden states of every proposal of every input."""
    w = {key: torch.from_numpy(v) for key, v in weights.items()}
    p = "roi_heads.box_predictor"
    feats, hidden = [], []
    for x, h, wd in inputs:
        res4 = backbone(x, w, cfg)["res4"]
        proposals = rpn(res4, w, cfg, h, wd)[2]
        features, class_logits = roi_heads(res4, proposals, w, cfg)[1:3]
        emb = F.embedding(class_logits.argmax(-1), w[p + ".cls_embedding.weight"])
        fc = F.linear(torch.cat([features, emb], -1), w[p + ".fc_attr.weight"], w[p + ".fc_attr.bias"])
        feats.append(features)
        hidden.append(F.relu(fc))
    return torch.cat(feats).double().numpy(), torch.cat(hidden).double().numpy()


def calibrate_heads(weights, inputs, cfg, rng):
    """Centre and scale the random class, box and attribute layers on the photos' own features.

    The pooled features are post-ReLU (all positive), so raw random layers let one class win
    every box; re-centring on the mean input and scaling the outputs to a standard deviation of
    about 1.5 gives varied classes and confidences around the 0.2 threshold."""

    def centre(prefix, x, target_std):
        mu = x.mean(0)
        raw = weights[prefix + ".weight"].astype(np.float64)
        scale = target_std / ((x - mu) @ raw.T).std()
        weights[prefix + ".weight"] = (raw * scale).astype(np.float32)
        weights[prefix + ".bias"] = (-(raw * scale) @ mu + rng.normal(0.0, 0.3, raw.shape[0])).astype(np.float32)

    features, _ = head_inputs(weights, inputs, cfg)
    centre("roi_heads.box_predictor.cls_score", features, 1.5)
    centre("roi_heads.box_predictor.bbox_pred", features, 0.5)
    # The attribute branch depends on the arg-max class: recompute after the class layer.
    _, hidden = head_inputs(weights, inputs, cfg)
    centre("roi_heads.box_predictor.attr_score", hidden, 1.5)


def preprocess(rgb, cfg):
    """ResizeShortestEdge (PIL bilinear on the BGR array) and mean subtraction."""
    h0, w0 = rgb.shape[:2]
    size = cfg["min_size"]
    scale = size * 1.0 / min(h0, w0)
    newh, neww = (size, scale * w0) if h0 < w0 else (scale * h0, size)
    if max(newh, neww) > cfg["max_size"]:
        scale = cfg["max_size"] * 1.0 / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    neww, newh = int(neww + 0.5), int(newh + 0.5)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    resized_bgr = np.asarray(Image.fromarray(bgr).resize((neww, newh), Image.BILINEAR))
    x = torch.as_tensor(resized_bgr.astype("float32").transpose(2, 0, 1))
    x = (x - torch.tensor(cfg["pixel_mean_bgr"]).view(3, 1, 1))[None]
    return x, newh, neww, resized_bgr


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default=os.path.join(here, "..", "..", "assets", "photos"))
    parser.add_argument("--out", default=os.path.join(here, "..", "tests", "golden"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)

    rng = np.random.RandomState(SEED)
    photos = [
        (name, np.asarray(Image.open(os.path.join(args.photos, name)).convert("RGB").resize(size, Image.BILINEAR)))
        for name, size in PHOTOS
    ]
    weights = make_weights(CONFIG, rng)
    calibrate_heads(weights, [preprocess(rgb, CONFIG)[:3] for _, rgb in photos], CONFIG, rng)
    os.makedirs(args.out, exist_ok=True)
    pkl = os.path.join(args.out, "butd_tiny.pkl")
    with open(pkl, "wb") as f:
        pickle.dump({"model": weights, "__author__": "imagebert tools/butd_reference.py"}, f, protocol=2)
    butd_to_safetensors.main([pkl, os.path.join(args.out, "butd_tiny.safetensors")])

    w = {key: torch.from_numpy(v) for key, v in weights.items()}
    images = []
    for name, rgb in photos:
        images.append(run_image(name, rgb, w, CONFIG))
    golden = {
        "generator": "tools/butd_reference.py",
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": np.__version__},
        "config": CONFIG,
        "images": images,
    }
    path = os.path.join(args.out, "butd_tiny.json")
    with open(path, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
    print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
