"""Markdown tables of the figures the attacks recorded (AUSCAT_RESULTS_DIR, build/reliability by default).

python -m tests.reliability.report [DIRECTORY]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEFAULT_DIRECTORY = Path("build/reliability")


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def crash(figures: dict) -> str:
    trials = figures["trials"]
    rows = [
        [t["trial"], t["kill_after_s"], t["sent"], t["acknowledged"], t["stored"], t["lost_acknowledged"],
         t["index_entries_without_file"], t["orphans_total"], t["recovery_s"]]
        for t in trials
    ]  # fmt: skip
    rows.append(
        ["all", "", sum(t["sent"] for t in trials), sum(t["acknowledged"] for t in trials),
         sum(t["stored"] for t in trials), sum(t["lost_acknowledged"] for t in trials),
         sum(t["index_entries_without_file"] for t in trials), trials[-1]["orphans_total"] if trials else 0,
         max((t["recovery_s"] for t in trials), default="")]
    )  # fmt: skip
    header = ["trial", "kill after (s)", "sent", "acknowledged", "stored", "acknowledged lost",
              "index entries without file", "orphans (cumulative)", "healthy again (s)"]  # fmt: skip
    return table(header, rows)


def flat(figures: dict) -> str:
    return table(["figure", "value"], [[key, json.dumps(value)] for key, value in sorted(figures.items())])


def main(argv: list[str]) -> int:
    directory = Path(argv[0]) if argv else DEFAULT_DIRECTORY
    files = sorted(directory.glob("*.json"))
    if not files:
        print(f"no figures in {directory}: run the reliability scenario first", file=sys.stderr)
        return 1
    for path in files:
        figures = json.loads(path.read_text(encoding="utf-8"))
        print(f"### {path.stem}\n")
        print(crash(figures) if path.stem == "crash" else flat(figures))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
