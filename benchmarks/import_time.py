"""What importing memo costs, beside ``import asyncio``.

    python benchmarks/import_time.py [--rounds N]

Each round starts a fresh interpreter per contender (in an order rotated by the round,
so drift is shared out evenly) and reads the child's own wall time and CPU time for the
import alone, measured inside it. Medians and best rounds, in milliseconds; the ratio is
memo's median over asyncio's. Also lists any heavy package ``import memo`` pulled in.

Every contender imports compiled bytecode, as an installed package does (pip compiles
a wheel's modules when it installs them, and the standard library ships compiled):
the children write and read their bytecode under a private cache directory
(``PYTHONPYCACHEPREFIX``), filled by one untimed import of each statement before the
rounds, even where the environment sets ``PYTHONDONTWRITEBYTECODE``. Without that,
memo's own modules would be compiled from source at every import and timed as such
(``from memo import cached`` read 67 ms that way and 39 ms compiled, on a machine where
``import asyncio`` took 19 to 21 ms either way).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

#: What each contender runs in a fresh interpreter. ``import memo`` loads a name's
#: module at its first use; the ``from memo import ...`` rows show what using it costs.
CONTENDERS = {
    "import asyncio": "import asyncio",
    "import memo": "import memo",
    "from memo import cached": "from memo import cached",
    "... GenericRedisCache": "from memo import GenericRedisCache",
}

PROBE = """
import json, sys, time
wall, cpu = time.perf_counter(), time.process_time()
{statement}
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {{'redis', 'fastapi', 'pydantic', 'starlette'}})
print(json.dumps([wall * 1000, cpu * 1000, heavy]))
"""


def child_environment(pycache: str) -> dict[str, str]:
    """The environment of every child: bytecode written and read under ``pycache``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def measure(statement: str, env: dict[str, str]) -> tuple[float, float, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(statement=statement)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    wall, cpu, heavy = json.loads(out.stdout)
    return wall, cpu, heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    names = list(CONTENDERS)
    walls: dict[str, list[float]] = {n: [] for n in names}
    cpus: dict[str, list[float]] = {n: [] for n in names}
    heavy: dict[str, set[str]] = {n: set() for n in names}
    with tempfile.TemporaryDirectory(prefix="memo-import-time-") as pycache:
        env = child_environment(pycache)
        for statement in CONTENDERS.values():
            measure(statement, env)  # compiles what the statement imports, untimed
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                wall, cpu, loaded = measure(CONTENDERS[name], env)
                walls[name].append(wall)
                cpus[name].append(cpu)
                heavy[name].update(loaded)
    print(f"{args.rounds} interleaved rounds, a fresh interpreter each, compiled bytecode")
    print(f"  {'contender':<26}{'wall median':>12}{'best':>8}{'cpu median':>12}{'best':>8}  loads")
    for name in names:
        print(
            f"  {name:<26}{statistics.median(walls[name]):>12.1f}{min(walls[name]):>8.1f}"
            f"{statistics.median(cpus[name]):>12.1f}{min(cpus[name]):>8.1f}"
            f"  {', '.join(sorted(heavy[name])) or '-'}"
        )
    base = "import asyncio"
    for name in names[1:]:
        print(
            f"  {name} / import asyncio: "
            f"wall {statistics.median(walls[name]) / statistics.median(walls[base]):.2f}x, "
            f"cpu {statistics.median(cpus[name]) / statistics.median(cpus[base]):.2f}x"
        )


if __name__ == "__main__":
    main()
