"""The short soak of `make test` (issue 17): tests/soak.py with a few dmd SIGKILLs.

Mixed load (small and large PUTs, multipart uploads, GETs with MD5 comparison, deletes,
versioned deletes and delete markers, listings) through two gateways while the dmd is killed
and restarted 3 times. Then: every acknowledged write reads back identical, every acknowledged
delete is gone, no 5xx other than 503 was answered, the scrub finds nothing it cannot explain,
and after `--repair` nothing at all. `python -m tests.soak --kills 100` is the long version.
"""
from __future__ import annotations

from pathlib import Path

from tests.soak import Options, run_soak

KILLS = 3


def test_short_soak_with_dmd_sigkills(tmp_path: Path) -> None:
    summary = run_soak(Options(kills=KILLS, gateways=2, workers=4, min_interval=3.0, max_interval=6.0,
                               max_down=1.0, settle=2.0, large_max_mib=3, workdir=tmp_path))
    report = summary.text()
    print(report)
    assert not summary.violations, report
    assert summary.kills == KILLS, report
    assert summary.lost == 0 and summary.resurrected == 0 and summary.status_5xx == 0, report
    # The load really ran around the kills and the final check really checked something.
    assert summary.acked_writes >= 50 and summary.acked_deletes >= 5, report
    assert summary.checked_keys >= 40 and summary.checked_versions >= 10, report
    assert summary.ops["CompleteMultipartUpload"] + summary.ops["PutObject(large)"] >= 1, report
