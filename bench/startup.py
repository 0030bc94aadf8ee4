"""CLI start-up: the installed `emogen` console script (`emogen --help`) vs `python -c pass` (the floor),
each a fresh process, interleaved (emogen, python, emogen, python, ...); the ratio is the median per-pair
ratio with min/max. `import torch` alone is timed too, for scale. The script is the one next to this
interpreter (the venv's) or on PATH; without one, `python -m emogen_cli` stands in and the result says so.

    python bench/startup.py [--repeats 10] [--quick] [--json]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from _common import emit, interleaved, median, pair_stats, parse, parser, spread


def emogen_command() -> tuple[list[str], str]:
    """(the command that starts the `emogen` script, what it is)."""
    beside = Path(sys.executable).parent / ("emogen.exe" if os.name == "nt" else "emogen")
    script = str(beside) if beside.is_file() else shutil.which("emogen")
    if script:
        return [script], script
    return [sys.executable, "-m", "emogen_cli"], "python -m emogen_cli (no `emogen` script installed)"


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    args = parse(p, argv)
    repeats = 3 if args.quick else args.repeats
    command, what = emogen_command()

    def run(*cmd: str):
        return lambda: subprocess.run(list(cmd), check=True, capture_output=True)

    times = interleaved({"emogen": run(*command, "--help"), "python": run(sys.executable, "-c", "pass")}, repeats,
                        lambda: None)
    stats = pair_stats(times["emogen"], times["python"])
    torch = median(interleaved({"torch": run(sys.executable, "-c", "import torch")}, repeats, lambda: None)["torch"])
    result = {"command": what, "script": len(command) == 1, "python_s": stats["peer_s"],
              "emogen_help_s": stats["ours_s"], "import_torch_s": torch, **stats, "repeats": repeats}
    emit("startup", result, args.json, f"`{what} --help` {stats['ours_s'] * 1000:.0f} ms vs `python -c pass` "
                                       f"{stats['peer_s'] * 1000:.0f} ms: ratio {spread(stats)}; `import torch` "
                                       f"alone takes {torch * 1000:.0f} ms")
    return result


if __name__ == "__main__":
    main()
