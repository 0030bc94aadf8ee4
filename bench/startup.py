"""CLI start-up: `emogen --help` vs `python -c pass` (the floor) in fresh interpreters.

    python bench/startup.py [--repeats 10] [--quick] [--json]
"""

from __future__ import annotations

import subprocess
import sys

from _common import emit, median, parser, timings


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    repeats = 3 if args.quick else args.repeats

    def run(*cmd: str):
        return lambda: subprocess.run([sys.executable, *cmd], check=True, capture_output=True)

    floor = median(timings(run("-c", "pass"), repeats))
    cli = median(timings(run("-m", "emogen_cli", "--help"), repeats))
    torch = median(timings(run("-c", "import torch"), repeats))
    result = {"python_s": floor, "emogen_help_s": cli, "import_torch_s": torch, "ratio": cli / floor,
              "repeats": repeats}
    emit("startup", result, args.json, f"emogen --help {cli * 1000:.0f} ms = {cli / floor:.1f}x `python -c pass` "
                                       f"({floor * 1000:.0f} ms); `import torch` alone takes {torch * 1000:.0f} ms")
    return result


if __name__ == "__main__":
    main()
