"""Per-image throughput of img2dataset's image step, on one core, beside `pipeline bench`.

Times what img2dataset does with each downloaded image: its `Resizer` (decode, size filter,
resize, JPEG encode) on a BytesIO of the bytes, then the SHA-256 of the original bytes (its
default `compute_hash`). The settings match ours: longest side at most --max-side, never
enlarged, JPEG at --quality, and an image whose width or height is not greater than 300 is
refused. The photos are grouped by real format and each group runs for seconds / groups, as
`pipeline bench` does. Prints a table, then one JSON line last.
"""

import argparse
import hashlib
import io
import json
import os
import time
from importlib.metadata import version

# albumentations (imported by img2dataset) otherwise asks the network for a newer release.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2  # noqa: E402
from img2dataset.resizer import Resizer  # noqa: E402


def real_format(data):
    """The format named by the magic bytes, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return None


def one_image(resizer, data):
    """What img2dataset's downloader does with one downloaded image; the error, or None."""
    stream = io.BytesIO(data)
    error = resizer(stream)[-1]
    if error is None:
        stream.seek(0)
        hashlib.sha256(stream.read()).hexdigest()
    return error


def time_group(resizer, fmt, group, seconds):
    """Runs over `group` until `seconds` are used (at least one pass); one row."""
    cpu_start = time.thread_time()
    start = time.perf_counter()
    images = 0
    while images == 0 or time.perf_counter() - start < seconds:
        for data in group:
            one_image(resizer, data)
            images += 1
    wall = time.perf_counter() - start
    cpu = time.thread_time() - cpu_start
    return {
        "format": fmt,
        "photos": len(group),
        "images": images,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "images_per_second": images / wall,
        "images_per_cpu_second": images / cpu,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default="assets/photos", help="folder of .jpg/.jpeg/.png")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds in all")
    parser.add_argument("--max-side", type=int, default=512, help="longest side kept, pixels")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    args = parser.parse_args()

    cv2.setNumThreads(1)  # the Resizer sets it too, on every call
    resizer = Resizer(
        image_size=args.max_side,
        resize_mode="keep_ratio_largest",
        resize_only_if_bigger=True,
        encode_format="jpg",
        encode_quality=args.quality,
        # img2dataset refuses min(width, height) < min_image_size; ours keeps width and height > 300.
        min_image_size=301,
    )

    groups = {}
    refused = []
    for name in sorted(os.listdir(args.photos)):
        path = os.path.join(args.photos, name)
        if not name.lower().endswith((".jpg", ".jpeg", ".png")) or not os.path.isfile(path):
            continue
        with open(path, "rb") as file:
            data = file.read()
        fmt = real_format(data)
        if fmt is None or one_image(resizer, data) is not None:
            refused.append(name)
            continue
        groups.setdefault(fmt, []).append(data)
    if not groups:
        parser.error(f"no usable photos in {args.photos}")

    per_group = args.seconds / len(groups)
    rows = [time_group(resizer, fmt, group, per_group) for fmt, group in groups.items()]
    images = sum(r["images"] for r in rows)
    wall = sum(r["wall_seconds"] for r in rows)
    cpu = sum(r["cpu_seconds"] for r in rows)
    rows.append({
        "format": "all",
        "photos": sum(r["photos"] for r in rows),
        "images": images,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "images_per_second": images / wall,
        "images_per_cpu_second": images / cpu,
    })

    for r in rows:
        print(f"{r['images_per_cpu_second']:10.1f} images/s  img2dataset, {r['format']} "
              f"({r['photos']} photos, max side {args.max_side})")
    print(json.dumps({
        "peer": "img2dataset",
        "img2dataset": version("img2dataset"),
        "opencv": cv2.__version__,
        "max_side": args.max_side,
        "rows": rows,
        "refused": refused,
    }))


if __name__ == "__main__":
    main()
