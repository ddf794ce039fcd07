"""Print the mutation score per module after `tox -e mutation`.

Reads the results mutmut 3 leaves next to each mutated file
(mutants/smtpd_compat/NAME.py.meta) and the survivors judged equivalent in
tests/mutation_equivalents.txt.  Per module: killed / (total - equivalent),
where "killed" includes timeouts and mutants that crashed the run.
Mutants not yet run are reported separately and count as not killed.

Run from the checkout: python tests/mutation_score.py
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants" / "smtpd_compat"
EQUIVALENTS = Path(__file__).resolve().parent / "mutation_equivalents.txt"

# mutmut's exit codes (mutmut/stats.py): what counts as a kill.
KILLED = {1, 3, -24, 24, 152, 255, 36, -11, -9}
SURVIVED = {0}
# None: not run yet; 2: the run was interrupted (Ctrl-C) before a verdict.
NOT_RUN = {None, 2}


def equivalent_ids() -> set[str]:
    """Mutant names listed in mutation_equivalents.txt (first word a line)."""
    names = set()
    for line in EQUIVALENTS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith((" ", "#")):
            names.add(line.split()[0])
    return names


def main() -> int:
    equivalents = equivalent_ids()
    seen_equivalents = set()
    print(
        "%-22s %8s %6s %8s %8s %8s %7s"
        % ("module", "killed", "total", "equiv.", "survived", "not run", "score")
    )
    for meta in sorted(MUTANTS.glob("*.py.meta")):
        results = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        if not results:
            continue
        counts: Counter[str] = Counter()
        for name, code in results.items():
            if name in equivalents:
                seen_equivalents.add(name)
                counts["equivalent"] += 1
            elif code in KILLED:
                counts["killed"] += 1
            elif code in NOT_RUN:
                counts["not run"] += 1
            else:
                counts["survived"] += 1
        judged = len(results) - counts["equivalent"]
        score = 100.0 * counts["killed"] / judged if judged else 100.0
        print(
            "%-22s %8d %6d %8d %8d %8d %6.1f%%"
            % (
                meta.name[: -len(".meta")],
                counts["killed"],
                len(results),
                counts["equivalent"],
                counts["survived"],
                counts["not run"],
                score,
            )
        )
    stale = sorted(equivalents - seen_equivalents)
    if stale:
        print("listed as equivalent but no such mutant now:", *stale, sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
