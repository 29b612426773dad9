"""Tests of scripts/fetch-assets, run by scripts/test after the real fetch has filled the cache.

They work on the smallest group (commoncrawl) in a temporary --dest, so the archive comes from
the cache and nothing is downloaded: idempotence, --verify naming a corrupted and a missing file,
and a normal run repairing both.
"""

import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "fetch-assets"
GROUP = "commoncrawl"


def fetch(dest: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--only", GROUP, "--dest", str(dest), *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )


class FetchAssetsTest(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.dest = Path(self.tmp.name)
        first = fetch(self.dest, "-q")
        self.assertEqual(first.returncode, 0, first.stderr)
        self.files = sorted(p for p in self.dest.rglob("*") if p.is_file())
        self.assertGreaterEqual(len(self.files), 3, "the WARC, WAT and WET fixtures")

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def test_second_run_changes_nothing(self) -> None:
        before = {p: p.stat().st_mtime_ns for p in self.files}
        again = fetch(self.dest, "-q")
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(before, {p: p.stat().st_mtime_ns for p in self.files})

    def test_verify_names_corrupt_and_missing_files_and_a_run_repairs_them(self) -> None:
        corrupt, missing = self.files[0], self.files[1]
        data = bytearray(corrupt.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, other bytes: only the sha256 can tell
        corrupt.write_bytes(bytes(data))
        missing.unlink()

        verify = fetch(self.dest, "--verify")
        self.assertEqual(verify.returncode, 1)
        report = verify.stdout + verify.stderr
        self.assertIn(corrupt.name, report)
        self.assertIn(missing.name, report)

        repair = fetch(self.dest, "-q")
        self.assertEqual(repair.returncode, 0, repair.stderr)
        self.assertEqual(fetch(self.dest, "--verify", "-q").returncode, 0)


if __name__ == "__main__":
    unittest.main()
