#!/usr/bin/env python3
"""The side-by-side anchor for `detector bench`: torchvision's Faster R-CNN models timed on the
same photos, same batch sizes, same device kind.

Weights are random (``weights=None``): no pretrained file can be fetched here, and the timing of
a forward pass does not depend on the weights' values except through the number of boxes the
heads keep, so ``box_score_thresh`` is set to 0 and ``box_detections_per_img`` to 100 to make
every image carry the full 100-box post-processing load, like a trained model on a busy photo.

Prints one JSON line per (model, batch size): images/s after one warm-up batch, measured for
``--seconds`` each. Needs torch and torchvision (``python3 -m pip install torch torchvision``).
"""

import argparse
import json
import pathlib
import time

import numpy as np
import torch
import torchvision
from PIL import Image

MODELS = {
    # MobileNetV3 backbone, like the default CenterNet detector.
    "fasterrcnn_mobilenet_v3_large_fpn": torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn,
    # ResNet-50 FPN: the usual Faster R-CNN, closest in cost to the paper's ResNet-101 C4.
    "fasterrcnn_resnet50_fpn": torchvision.models.detection.fasterrcnn_resnet50_fpn,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default="assets/photos", help="folder of JPEG/PNG photos (recursive)")
    parser.add_argument("--batch-sizes", default="1,4", help="comma-separated batch sizes")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per figure")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="bfloat16 runs the forward under torch.autocast")
    args = parser.parse_args()

    paths = sorted(p for p in pathlib.Path(args.photos).rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    images = [torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1).float() / 255 for p in paths]
    device = torch.device(args.device)
    images = [i.to(device) for i in images]
    torch.manual_seed(0)
    for name in args.models.split(","):
        model = MODELS[name](weights=None, weights_backbone=None, box_score_thresh=0.0,
                             box_detections_per_img=100).eval().to(device)
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            def batch(k):
                return [images[(k * batch_size + i) % len(images)] for i in range(batch_size)]

            def run(k):
                with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                            enabled=args.dtype == "bfloat16"):
                    model(batch(k))
                if device.type == "cuda":
                    torch.cuda.synchronize()

            run(0)
            start, batches = time.perf_counter(), 0
            while batches == 0 or time.perf_counter() - start < args.seconds:
                run(batches + 1)
                batches += 1
            elapsed = time.perf_counter() - start
            print(json.dumps({
                "name": f"torchvision {name} ({device.type}, {args.dtype}, random weights)",
                "batch_size": batch_size,
                "images_per_second": batches * batch_size / elapsed,
                "images": batches * batch_size,
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "threads": torch.get_num_threads(),
            }), flush=True)


if __name__ == "__main__":
    main()
