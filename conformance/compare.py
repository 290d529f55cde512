#!/usr/bin/env python3
"""Compare an Autobahn|Testsuite run (kosoku's index.json) with the committed expectations.

    compare.py EXPECTED INDEX --kosoku-version V            check; exit 1 on a regression
    compare.py EXPECTED INDEX --kosoku-version V --update   (re)write EXPECTED from INDEX

Each case has two verdicts: `behavior` (the message exchange) and `behaviorClose`
(the closing handshake). A verdict worse than expected, or a different class that is
not better (e.g. OK -> INFORMATIONAL, WRONG CODE -> UNCLEAN), is a regression, and so
is a case missing from the run or a case the expectations do not know. A better verdict
(e.g. NON-STRICT -> OK, UNIMPLEMENTED -> OK) is reported, not a failure: re-record with
--update to lock it in. A different close code from the server is reported too; it
fails only through the verdicts (kosoku rates close codes itself: WRONG CODE).

Standard library only, so it runs on any Python 3.8+.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

# Lower is better. Labels are Autobahn's, as kosoku reports them.
BEHAVIOR_RANK = {
    "OK": 0,
    "NON-STRICT": 1,
    "INFORMATIONAL": 2,
    "UNIMPLEMENTED": 3,
    "FAILED": 4,
    "ERROR": 5,
}
CLOSE_RANK = {
    "OK": 0,
    "INFORMATIONAL": 1,
    # Every other label is a failure of its own kind; none is better than another.
    "WRONG CODE": 2,
    "UNCLEAN": 2,
    "FAILED BY CLIENT": 2,
    "FAILED": 2,
    "NO_CLOSE": 2,
}
# The order of the summary counts (docs/CONFORMANCE.md uses the same).
SUMMARY_ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]


def case_key(case_id: str) -> list[int]:
    """Numeric order: 1.2.10 after 1.2.9."""
    return [int(part) for part in case_id.split(".")]


def load_run(path: Path) -> dict[str, dict]:
    """The cases of kosoku's index.json: {agent: {case id: entry}} with one agent."""
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: cannot read the run's results {path}: {err}") from err
    if not isinstance(index, dict) or len(index) != 1:
        raise SystemExit(
            f"error: {path}: expected the results of exactly one server, "
            f"found {len(index) if isinstance(index, dict) else 'no'} agents"
        )
    (cases,) = index.values()
    return {
        case_id: {
            "behavior": entry["behavior"],
            "behaviorClose": entry["behaviorClose"],
            "remoteCloseCode": entry.get("remoteCloseCode"),
        }
        for case_id, entry in cases.items()
    }


def load_expected(path: Path) -> tuple[dict[str, dict], str]:
    """The expected cases, and the kosoku version they were recorded with."""
    try:
        data = json.loads(path.read_text())
        return data["cases"], data["kosoku"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SystemExit(f"error: cannot read the expectations {path}: {err}") from err


def write_expected(path: Path, cases: dict[str, dict], kosoku: str) -> None:
    """One case per line, in case order, so a re-record diffs case by case."""
    lines = []
    for case_id in sorted(cases, key=case_key):
        entry = cases[case_id]
        row = {
            "behavior": entry["behavior"],
            "behaviorClose": entry["behaviorClose"],
            "remoteCloseCode": entry["remoteCloseCode"],
        }
        lines.append(f"    {json.dumps(case_id)}: {json.dumps(row)}")
    text = (
        "{\n"
        '  "comment": "Autobahn|Testsuite verdicts of the chat-ws-warp echo server '
        '(conformance/run.sh). Re-record with conformance/run.sh --update; see '
        'docs/CONFORMANCE.md.",\n'
        f'  "kosoku": {json.dumps(kosoku)},\n'
        '  "cases": {\n' + ",\n".join(lines) + "\n  }\n}\n"
    )
    path.write_text(text)


def compare_verdict(expected: str, got: str, rank: dict[str, int]) -> int:
    """-1 better, 0 same, 1 regression."""
    if expected == got:
        return 0
    if expected in rank and got in rank and rank[got] < rank[expected]:
        return -1
    return 1


def summary(cases: dict[str, dict]) -> str:
    """Counts by `behavior`: the five usual labels always, any other only when seen."""
    counts = Counter(entry["behavior"] for entry in cases.values())
    labels = SUMMARY_ORDER + sorted(set(counts) - set(SUMMARY_ORDER))
    return ", ".join(f"{label} {counts[label]}" for label in labels)


def describe(entry: dict | None) -> str:
    if entry is None:
        return "missing"
    return f"{entry['behavior']} / close {entry['behaviorClose']} (code {entry['remoteCloseCode']})"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("expected", type=Path, help="conformance/expected.json")
    parser.add_argument("index", type=Path, help="kosoku's index.json of the run")
    parser.add_argument("--update", action="store_true", help="write EXPECTED from the run")
    parser.add_argument(
        "--kosoku-version",
        required=True,
        help="the kosoku that made the run (recorded by --update, checked otherwise)",
    )
    args = parser.parse_args()

    run = load_run(args.index)
    if not run:
        raise SystemExit(f"error: {args.index} has no cases")
    print(f"run: {len(run)} cases: {summary(run)}")

    if args.update:
        write_expected(args.expected, run, args.kosoku_version)
        print(f"wrote {args.expected}")
        return 0

    expected, recorded_with = load_expected(args.expected)
    if recorded_with != args.kosoku_version:
        print(
            f"REGRESSION: the expectations were recorded with kosoku {recorded_with}, "
            f"this run used {args.kosoku_version}: re-record them (--update) with the pin"
        )
        return 1
    regressions: list[str] = []
    improvements: list[str] = []
    notes: list[str] = []
    for case_id in sorted(set(expected) | set(run), key=case_key):
        want, got = expected.get(case_id), run.get(case_id)
        if got is None:
            regressions.append(f"{case_id}: expected {describe(want)}, but the case did not run")
            continue
        if want is None:
            regressions.append(
                f"{case_id}: not in the expectations, got {describe(got)} (re-record?)"
            )
            continue
        verdicts = [
            compare_verdict(want["behavior"], got["behavior"], BEHAVIOR_RANK),
            compare_verdict(want["behaviorClose"], got["behaviorClose"], CLOSE_RANK),
        ]
        line = f"{case_id}: expected {describe(want)}, got {describe(got)}"
        if 1 in verdicts:
            regressions.append(line)
        elif -1 in verdicts:
            improvements.append(line)
        elif want.get("remoteCloseCode") != got["remoteCloseCode"]:
            notes.append(line)

    print(f"expected: {len(expected)} cases: {summary(expected)}")
    if notes:
        print(f"\n{len(notes)} case(s) with the same verdicts but another close code:")
        print("\n".join(f"  {line}" for line in notes))
    if improvements:
        print(f"\n{len(improvements)} case(s) better than expected (re-record to tighten):")
        print("\n".join(f"  {line}" for line in improvements))
    if regressions:
        print(f"\nREGRESSION: {len(regressions)} case(s) worse than expected:")
        print("\n".join(f"  {line}" for line in regressions))
        print(f"\nPer-case reports (what was sent and received): {args.index.parent}/")
        return 1
    print("\nno regression")
    return 0


if __name__ == "__main__":
    sys.exit(main())
