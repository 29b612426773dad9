#!/usr/bin/env python3
"""Checks a folder `scripts/demo` wrote (IMAGEBERT_DEMO_DIR): every crawled row accounted for and
every hostile case refused for its reason, regions for every kept image, training logs complete and
finite, fine-tuned recall above chance and above zero-shot on the held-out photos and on the
held-out captions of the training photos, and a report whose pictures exist.

    check_demo.py check DEMO                 after a first run
    check_demo.py snapshot DEMO > FILE       fingerprints of what a rerun must leave alone
    check_demo.py rerun DEMO FILE            after a rerun: nothing redone, nothing changed

Exits non-zero with the failed claim; used by scripts/test-end-to-end.
"""

import hashlib
import json
import math
import re
import sys
from pathlib import Path

# What the mini-web's hostile page and the Common Crawl records must produce, by stats key.
EXPECTED_DROPS = {
    "robots_disallowed",  # an image under /private/
    "noai_header",  # X-Robots-Tag: noai
    "too_small",  # the 1x1 image (and a 451x300 photo: LAIT wants both sides > 300)
    "duplicate_image",  # every gallery thumbnail
    "language",  # the German caption
    "host_not_allowed",  # Common Crawl's image hosts, refused by fetch.allowed_hosts
    "boilerplate",  # Common Crawl's alt texts such as "logo"
    "nsfw_or_non_natural",  # drawn or rendered pictures: cards, smarties, a 3D model
}
EXPECTED_FAILURES = {"http_404", "too_many_pixels", "seed_page_failed"}
# The captions held out per training photo.
HELD_OUT = 2
FIXTURES = Path(__file__).resolve().parent.parent / "trainer/tests/fixtures"


def load(path):
    return json.loads(Path(path).read_text())


def fail(message):
    sys.exit(f"check_demo: FAILED: {message}")


def claim(ok, message):
    if not ok:
        fail(message)


def photo_counts():
    """Photos trained on (all of photo_captions.json, split train of opencv_photo_captions.json)
    and photos held out (split test of opencv_photo_captions.json), as scripts/demo splits them."""
    first = load(FIXTURES / "photo_captions.json")["images"]
    second = load(FIXTURES / "opencv_photo_captions.json")["images"]
    held_out = sum(i["split"] == "test" for i in second)
    return len(first) + len(second) - held_out, held_out


def check_recall(work, prefix, images, captions):
    """Zero-shot and fine-tuned evaluations of one test set; returns their and chance's RSUM."""
    reports = {m: load(work / f"retrieval/eval-{prefix}{m}/report.json") for m in ("zero-shot", "fine-tuned")}
    for model, report in reports.items():
        claim(
            (report["images"], report["captions"]) == (images, captions),
            f"{prefix}{model}: evaluated {report['images']} images, {report['captions']} captions",
        )
    tuned, chance = reports["fine-tuned"]["recall"]["rsum"], reports["fine-tuned"]["chance"]["rsum"]
    zero_shot = reports["zero-shot"]["recall"]["rsum"]
    claim(tuned > chance + 30, f"{prefix}fine-tuned RSUM {tuned:.1f} not well above chance {chance:.1f}")
    claim(tuned > zero_shot, f"{prefix}fine-tuned RSUM {tuned:.1f} not above zero-shot {zero_shot:.1f}")
    return tuned, zero_shot, chance


def check(demo):
    work = demo / "work"
    photos, held_out_photos = photo_counts()
    audit = load(work / "audit.json")
    claim(audit["input_rows"] > 100, f"too few input rows: {audit}")
    claim(audit["output_rows"] == audit["input_rows"], f"rows lost or added: {audit}")
    claim(
        not audit["uncommitted_shards"]
        and audit["missing"][0] == 0
        and audit["duplicated"][0] == 0
        and audit["unexpected"][0] == 0,
        f"audit not clean: {audit}",
    )
    # The audit sums the committed shards' stats files, wherever the shards are (IMAGEBERT_DEMO_PAIRS).
    statuses = audit["counts_by_status"]
    claim(sum(statuses.values()) == audit["input_rows"], f"statuses {statuses} miss rows")
    dropped, failed = set(audit["drop_reasons"]), set(audit["error_tallies"])
    claim(EXPECTED_DROPS <= dropped, f"drop reasons {sorted(dropped)} miss {EXPECTED_DROPS - dropped}")
    claim(EXPECTED_FAILURES <= failed, f"failures {sorted(failed)} miss {EXPECTED_FAILURES - failed}")
    kept = statuses.get("kept", 0)
    # The filters rightly drop four gallery photos: chelsea.png (451x300, too small) and three
    # pictures that are not photos (cards.png, smarties.png, Blender_Suzanne1.jpg).
    claim(kept >= photos - 4, f"only {kept} pairs kept from the {photos} gallery photos")
    extract = load(work / "extract.json")
    claim(
        (extract["images_ok"], extract["images_failed"]) == (kept, 0),
        f"detector extract: {extract} for {kept} kept pairs",
    )

    for run in ("stage1", "stage2", "retrieval/finetune"):
        config = (work / f"{run}.toml").read_text()
        steps = int(re.search(r"^steps = (\d+)$", config, re.M).group(1))
        lines = [json.loads(l) for l in (work / run / "log.jsonl").read_text().splitlines()]
        claim(len(lines) == steps, f"{run}: {len(lines)} log lines for {steps} steps")
        claim(all(math.isfinite(l["loss"]) for l in lines), f"{run}: a loss is not finite")

    on_photos = check_recall(work, "photos-", held_out_photos, 5 * held_out_photos)
    on_captions = check_recall(work, "", photos, photos * HELD_OUT)

    page = (demo / "report.md").read_text()
    pictures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", page)
    # Loss and accuracy curves of stage 1, stage 2 and fine-tuning.
    claim(len(pictures) == 6, f"report.md shows {len(pictures)} curves, expected 6")
    for picture in pictures:
        claim((demo / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{picture} is not a PNG")
    for row in ("| zero-shot |", "| fine-tuned |", "| chance |"):
        claim(page.count(row) == 2, f"report.md has not two {row} rows, one per test set")
    print(
        f"check_demo: ok: {audit['input_rows']} rows accounted for ({kept} kept); RSUM fine-tuned / "
        f"zero-shot / chance: {held_out_photos} held-out photos %.1f / %.1f / %.1f, "
        f"held-out captions of {photos} photos %.1f / %.1f / %.1f" % (on_photos + on_captions)
    )


def snapshot(demo):
    """Digests of the files a rerun must not rewrite: shards, stats, logs, checkpoints."""
    work = demo / "work"
    digests = {}
    for path in sorted(work.rglob("*")):
        name = str(path.relative_to(work))
        durable = path.suffix in (".parquet", ".jsonl", ".mpk") or name.endswith("_stats.json")
        if path.is_file() and durable and "/scores/" not in f"/{name}":
            digests[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def rerun(demo, before):
    work = demo / "work"
    after = snapshot(demo)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    claim(not changed, f"the rerun rewrote {changed[:10]}")
    ingest = load(work / "ingest.json")
    claim(ingest["shards_written"] == 0, f"the rerun ingested again: {ingest}")
    extract = load(work / "extract.json")
    claim(extract["shards_done"] == 0, f"the rerun extracted again: {extract}")
    for model in ("zero-shot", "fine-tuned", "photos-zero-shot", "photos-fine-tuned"):
        report = load(work / f"retrieval/eval-{model}/report.json")
        claim(report["pairs_scored"] == 0, f"{model}: the rerun scored {report['pairs_scored']} pairs")
    print(f"check_demo: rerun ok: {len(after)} files unchanged, nothing recomputed")


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("check", "snapshot", "rerun"):
        sys.exit(__doc__)
    demo = Path(sys.argv[2])
    if sys.argv[1] == "check":
        check(demo)
    elif sys.argv[1] == "snapshot":
        json.dump(snapshot(demo), sys.stdout)
    else:
        rerun(demo, load(sys.argv[3]))


if __name__ == "__main__":
    main()
