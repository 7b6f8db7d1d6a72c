#!/usr/bin/env python3
"""Summarise a kosoku (Autobahn) report directory for scripts/autobahn.sh.

Reads REPORT_DIR/index.json (agent -> case id -> verdicts) and, for every case that is not a
plain OK, that case's own JSON report for the reason texts. A case passes when its `behavior` is
OK, NON-STRICT or INFORMATIONAL and its `behaviorClose` is OK or INFORMATIONAL (kosoku's own
`CaseResult.passed`); anything else (FAILED, UNIMPLEMENTED, ERROR, WRONG CODE, UNCLEAN, ...)
fails. Prints one line per non-OK case, the NON-STRICT count with their ids, and finally
`autobahn: N passed, M failed`. Exits 1 if any case failed or there are no results.

Usage: autobahn_report.py REPORT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PASS_BEHAVIOR = {"OK", "NON-STRICT", "INFORMATIONAL"}
PASS_CLOSE = {"OK", "INFORMATIONAL"}


def case_key(case_id: str) -> list[int]:
    return [int(part) if part.isdigit() else 0 for part in case_id.split(".")]


def one_line(text: object, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reasons(report: dict) -> str:
    parts = []
    for key in ("result", "resultClose", "wasNotCleanReason"):
        if report.get(key):
            parts.append(one_line(report[key]))
    if report.get("remoteCloseCode") is not None:
        close = f"server closed {report['remoteCloseCode']}"
        if report.get("remoteCloseReason"):
            close += f" {one_line(report['remoteCloseReason'], 60)!r}"
        parts.append(close)
    expected = (report.get("expectedClose") or {}).get("closeCode")
    if expected and report.get("behaviorClose") not in PASS_CLOSE:
        parts.append(f"expected close {expected}")
    received = report.get("received")
    if received and report.get("behavior") not in PASS_BEHAVIOR:
        parts.append(f"received {one_line(json.dumps(received[:2]), 120)}")
    return "; ".join(parts)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    outdir = Path(sys.argv[1])
    index_path = outdir / "index.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as err:
        print(f"autobahn: no results: cannot read {index_path}: {err}")
        return 1

    passed = failed = 0
    non_strict: list[str] = []
    rows = [
        (case_id, entry)
        for cases in index.values()
        for case_id, entry in cases.items()
    ]
    rows.sort(key=lambda row: case_key(row[0]))
    for case_id, entry in rows:
        behavior = entry.get("behavior")
        close = entry.get("behaviorClose")
        ok = behavior in PASS_BEHAVIOR and close in PASS_CLOSE
        if ok:
            passed += 1
        else:
            failed += 1
        if behavior == "NON-STRICT":
            non_strict.append(case_id)
        if behavior == "OK" and close == "OK":
            continue
        try:
            report = json.loads((outdir / entry["reportfile"]).read_text())
        except (OSError, ValueError, KeyError):
            report = {}
        verdict = "FAIL" if not ok else "pass"
        print(
            f"  {verdict} {case_id}: behavior={behavior} close={close}"
            f" -- {reasons(report) or 'no report'}"
        )

    if not rows:
        print(f"autobahn: no results in {index_path}")
        return 1
    ids = " ".join(non_strict) if non_strict else "-"
    print(f"autobahn: {len(non_strict)} NON-STRICT: {ids}")
    print(f"autobahn: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
