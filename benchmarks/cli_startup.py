"""Start-up time of the ``pp-diffusion`` command: ``--help`` and ``demo --help`` against importing the
package's heavy part (JAX, NumPyro, ArviZ), each in a fresh process, median and range over repeats.

    python benchmarks/cli_startup.py              # 7 repeats
    python benchmarks/cli_startup.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from _tables import print_table

CASES = {
    "pp-diffusion --help": [sys.executable, "-m", "pp_diffusion._cli", "--help"],
    "pp-diffusion demo --help": [sys.executable, "-m", "pp_diffusion._cli", "demo", "--help"],
    "import pp_diffusion": [sys.executable, "-c", "import pp_diffusion"],
    "import pp_diffusion; pp_diffusion.infer": [sys.executable, "-c", "import pp_diffusion; pp_diffusion.infer"],
    "python (empty)": [sys.executable, "-c", "pass"],
}


def wall_time(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rows = []
    for name, argv in CASES.items():
        wall_time(argv)  # warm the file cache
        times = [wall_time(argv) for _ in range(args.repeats)]
        rows.append([name, f"{statistics.median(times):.3f}", f"{min(times):.3f}-{max(times):.3f}"])
    print(f"wall time of a fresh process, seconds ({args.repeats} repeats)")
    print_table(["command", "median", "range"], rows)


if __name__ == "__main__":
    main()
