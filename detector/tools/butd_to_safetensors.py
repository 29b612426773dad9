#!/usr/bin/env python3
"""Convert a bottom-up-attention detectron2 pickle into a safetensors file for the Rust detector.

One-shot conversion, Python standard library + numpy only:

    python3 tools/butd_to_safetensors.py faster_rcnn_from_caffe_attr.pkl butd_vg.safetensors

Input: the pickle of the detectron2 port of bottom-up-attention (airsplay/py-bottom-up-attention,
e.g. `faster_rcnn_from_caffe_attr.pkl`), read the way detectron2's `DetectionCheckpointer` reads
`.pkl` files (`pickle.load(f, encoding="latin1")`): either `{"model": {key: ndarray}, ...}` or a
flat `{key: ndarray}`. Keys are kept as they are (detectron2 names such as
`backbone.res4.22.conv3.norm.running_var`, `roi_heads.box_predictor.cls_embedding.weight`).

Output: a safetensors file (8-byte little-endian header length, JSON header with `dtype`, `shape`
and `data_offsets` per tensor plus `__metadata__`, then the raw little-endian data) with every
floating-point tensor stored as F32. Non-float entries are refused, naming the key, because the
model has none; Caffe2-named pickles (`"blobs"`) are refused too, since their names would need
detectron2's heuristic renaming.
"""

import argparse
import json
import os
import pickle
import sys

import numpy as np


def load_state_dict(path):
    """The `{key: ndarray}` model dict inside a detectron2-style pickle."""
    with open(path, "rb") as f:
        data = pickle.load(f, encoding="latin1")
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a dict, found {type(data).__name__}")
    if "blobs" in data:
        raise SystemExit(f"{path}: Caffe2-named checkpoint ('blobs'); convert it with detectron2 first")
    model = data.get("model", data)
    if not isinstance(model, dict):
        raise SystemExit(f"{path}: 'model' is a {type(model).__name__}, expected a dict")
    tensors = {}
    for key, value in model.items():
        array = np.asarray(value)
        if not np.issubdtype(array.dtype, np.floating):
            raise SystemExit(f"{path}: tensor '{key}' has dtype {array.dtype}, expected a float")
        tensors[key] = np.ascontiguousarray(array, dtype="<f4")
    return tensors


def write_safetensors(tensors, path, metadata):
    """Writes `tensors` (name -> little-endian f32 array) in the safetensors format."""
    header = {"__metadata__": metadata}
    offset = 0
    names = sorted(tensors)
    for name in names:
        size = tensors[name].nbytes
        header[name] = {
            "dtype": "F32",
            "shape": list(tensors[name].shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad the header with spaces so the data starts 8-byte aligned.
    encoded += b" " * (-len(encoded) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        for name in names:
            f.write(tensors[name].tobytes())
    os.replace(tmp, path)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pickle", help="detectron2-style .pkl checkpoint")
    parser.add_argument("output", help="safetensors file to write")
    args = parser.parse_args(argv)
    tensors = load_state_dict(args.pickle)
    write_safetensors(
        tensors,
        args.output,
        {"source": os.path.basename(args.pickle), "converter": "butd_to_safetensors.py"},
    )
    total = sum(t.size for t in tensors.values())
    print(f"{args.output}: {len(tensors)} tensors, {total} values")


if __name__ == "__main__":
    main(sys.argv[1:])
