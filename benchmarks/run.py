"""Benchmarks: client CPU, throughput, connections, bulk memory and import time.

    python benchmarks/run.py                 # the full run, a few minutes
    python benchmarks/run.py --quick         # smaller sizes, a smoke test
    python benchmarks/run.py --write-docs    # also rewrite docs/benchmarks.md with the results

The fake Baidu runs in a separate process (benchmarks/fake_server.py), so the CPU measured here
is the client's alone. Contenders are measured alternately, pair by pair (A B C, B C A, ...), in
one run, so drift in the machine's speed spreads over all of them; medians and min/max are
reported.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from baidu_swan_auth import SwanAuthClient
from baidu_swan_auth.testing import DEFAULT_CLIENT_ID, DEFAULT_SECRET

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 32
WARM_UP = 200

_codes = itertools.count()


def _code(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_codes):09d}"


# -- the fake, in its own process ---------------------------------------------------------------


class Fake:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("fake_server.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "BAIDU_SWAN_SECRET": DEFAULT_SECRET},
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()

    def _ask(self, command: str) -> dict[str, int]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer: dict[str, int] = json.loads(self.process.stdout.readline())
        return answer

    def stats(self) -> dict[str, int]:
        return self._ask("stats")

    def reset(self) -> None:
        self._ask("reset")

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)


# -- contenders -----------------------------------------------------------------------------------

Exchange = Callable[[str], Awaitable[Any]]


async def _drive(exchange: Exchange, count: int, prefix: str) -> None:
    """``count`` exchanges, ``CONCURRENCY`` at a time."""
    remaining = iter(range(count))

    async def worker() -> None:
        for _ in remaining:
            await exchange(_code(prefix))

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def _measure(exchange: Exchange, count: int, prefix: str) -> tuple[float, float]:
    """Client CPU seconds and wall seconds for ``count`` exchanges, after a warm-up."""
    await _drive(exchange, WARM_UP, prefix)
    cpu, wall = time.process_time(), time.perf_counter()
    await _drive(exchange, count, prefix)
    return time.process_time() - cpu, time.perf_counter() - wall


async def sdk(url: str, count: int) -> tuple[float, float]:
    async with SwanAuthClient(DEFAULT_CLIENT_ID, DEFAULT_SECRET, endpoint=url) as client:
        return await _measure(client.exchange, count, "sdk")


async def raw_aiohttp(url: str, count: int) -> tuple[float, float]:
    # The twenty lines a user would write by hand.
    async with aiohttp.ClientSession() as session:

        async def exchange(code: str) -> Any:
            form = {"code": code, "client_id": DEFAULT_CLIENT_ID, "sk": DEFAULT_SECRET}
            async with session.post(url, data=form) as response:
                answer = await response.json()
            if "openid" not in answer:
                raise RuntimeError(answer)
            return answer

        return await _measure(exchange, count, "raw")


async def httpx_client(url: str, count: int) -> tuple[float, float]:
    import httpx  # noqa: PLC0415 (only this contender needs it)

    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(limits=limits) as client:

        async def exchange(code: str) -> Any:
            form = {"code": code, "client_id": DEFAULT_CLIENT_ID, "sk": DEFAULT_SECRET}
            answer = (await client.post(url, data=form)).json()
            if "openid" not in answer:
                raise RuntimeError(answer)
            return answer

        return await _measure(exchange, count, "httpx")


CONTENDERS: dict[str, Callable[[str, int], Awaitable[tuple[float, float]]]] = {
    "SwanAuthClient.exchange": sdk,
    "raw aiohttp": raw_aiohttp,
    "httpx.AsyncClient": httpx_client,
}


@dataclass
class Runs:
    cpu_us: list[float]
    per_second: list[float]


def _run_on(loop_factory: Callable[[], asyncio.AbstractEventLoop] | None, coroutine: Any) -> Any:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coroutine)


def cpu_and_throughput(
    url: str, count: int, pairs: int, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None
) -> dict[str, Runs]:
    results = {name: Runs([], []) for name in CONTENDERS}
    names = list(CONTENDERS)
    for pair in range(pairs):
        order = names[pair % len(names) :] + names[: pair % len(names)]
        for name in order:
            cpu, wall = _run_on(loop_factory, CONTENDERS[name](url, count))
            results[name].cpu_us.append(cpu / count * 1e6)
            results[name].per_second.append(count / wall)
    return results


# -- connections ----------------------------------------------------------------------------------


async def _sdk_connections(url: str, count: int, pool_size: int) -> None:
    async with SwanAuthClient(
        DEFAULT_CLIENT_ID, DEFAULT_SECRET, endpoint=url, pool_size=pool_size
    ) as client:
        await _drive(client.exchange, count, "connections")


def connections(
    fake: Fake,
    count: int,
    pool_size: int,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
) -> int:
    fake.reset()
    _run_on(loop_factory, _sdk_connections(fake.url, count, pool_size))
    return fake.stats()["connections_opened"]


# -- the bulk command -----------------------------------------------------------------------------


@contextmanager
def _folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="baidu-swan-auth-bench-") as name:
        yield Path(name)


# The command as installed, or the same entry point on a uvloop event loop.
_ON_ASYNCIO = [sys.executable, "-m", "baidu_swan_auth.cli"]
_ON_UVLOOP = [
    sys.executable,
    "-c",
    "import asyncio, sys, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
    "from baidu_swan_auth.cli import main; sys.exit(main(sys.argv[1:]))",
]


def bulk(url: str, size: int, *, uvloop: bool = False) -> tuple[float, float]:
    """Peak RSS in MiB and records per second of ``baidu-swan-auth exchange`` on ``size`` codes."""
    with _folder() as folder:
        source, target = folder / "codes.txt", folder / "records.jsonl"
        with source.open("w") as handle:
            for _ in range(size):
                handle.write(_code("bulk") + "\n")
        env = {
            **os.environ,
            "BAIDU_SWAN_CLIENT_ID": DEFAULT_CLIENT_ID,
            "BAIDU_SWAN_SECRET": DEFAULT_SECRET,
            "BAIDU_SWAN_ENDPOINT": url,
        }
        command = [*(_ON_UVLOOP if uvloop else _ON_ASYNCIO), "exchange", str(source)]
        command += ["-o", str(target), "--no-progress", "--concurrency", str(CONCURRENCY)]
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"the bulk command exited {process.returncode}")
        with target.open() as handle:
            records = sum(1 for _ in handle)
        if records != size:
            raise RuntimeError(f"{records} records for {size} codes")
    return usage.ru_maxrss / 1024, size / elapsed


# -- import time ----------------------------------------------------------------------------------

_IMPORT = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def import_times(pairs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"baidu_swan_auth": [], "aiohttp": []}
    for pair in range(pairs):
        order = list(times) if pair % 2 == 0 else list(reversed(times))
        for module in order:
            output = subprocess.run(
                [sys.executable, "-c", _IMPORT.format(module=module)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            times[module].append(float(output) * 1000)
    return times


# -- report ---------------------------------------------------------------------------------------


def _spread(values: list[float], digits: int = 0) -> str:
    form = f"{{:.{digits}f}}"
    median = form.format(statistics.median(values))
    return f"{median} ({form.format(min(values))} to {form.format(max(values))})"


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = [f"Python {platform.python_version()}", f"aiohttp {aiohttp.__version__}"]
    try:
        import httpx  # noqa: PLC0415

        versions.append(f"httpx {httpx.__version__}")
    except ImportError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; " + (
        ", ".join(versions)
    )


def _cpu_table(results: dict[str, Runs], count: int, pairs: int) -> list[str]:
    sdk_median = statistics.median(results["SwanAuthClient.exchange"].cpu_us)
    lines = [
        f"{count} exchanges per run after {WARM_UP} to warm up, {CONCURRENCY} at a time, "
        f"{pairs} alternating rounds; median (min to max).",
        "",
        "| client | client CPU per exchange (µs) | vs SDK | exchanges per second |",
        "|---|---|---|---|",
    ]
    for name, runs in results.items():
        ratio = statistics.median(runs.cpu_us) / sdk_median
        lines.append(
            f"| {name} | {_spread(runs.cpu_us)} | {ratio:.2f}x | {_spread(runs.per_second)} |"
        )
    return lines


@dataclass
class Verdicts:
    lines: list[str]

    def add(self, target: str, measured: str, held: bool) -> None:
        self.lines.append(f"| {target} | {measured} | {'yes' if held else '**no**'} |")


def _loops() -> list[tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]]:
    loops: list[tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]] = [("asyncio", None)]
    try:
        import uvloop  # noqa: PLC0415 (optional)
    except ImportError:
        return loops
    return [*loops, ("uvloop", uvloop.new_event_loop)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--write-docs", action="store_true", help="rewrite docs/benchmarks.md")
    parser.add_argument("--pairs", type=int, default=None, help="alternating rounds (default 5)")
    args = parser.parse_args()
    count = 500 if args.quick else 5000
    pairs = args.pairs or (2 if args.quick else 5)
    small, large = (1_000, 10_000) if args.quick else (10_000, 200_000)
    connection_count, pool_size = (2_000 if args.quick else 10_000), 100

    report = [
        f"Run on {datetime.date.today().isoformat()}: {_machine()}.",
        "",
        "Command: `python benchmarks/run.py" + (" --quick" if args.quick else "") + "`",
    ]
    verdicts = Verdicts(["| target | measured | holds |", "|---|---|---|"])
    loops = _loops()
    if len(loops) == 1:
        report += ["", "uvloop is not installed: everything ran on asyncio only."]
    fake = Fake()
    try:
        for loop_name, loop_factory in loops:
            results = cpu_and_throughput(fake.url, count, pairs, loop_factory)
            report += ["", f"### Client CPU and throughput ({loop_name})", ""]
            report += _cpu_table(results, count, pairs)
            sdk_cpu = statistics.median(results["SwanAuthClient.exchange"].cpu_us)
            raw_cpu = statistics.median(results["raw aiohttp"].cpu_us)
            httpx_cpu = statistics.median(results["httpx.AsyncClient"].cpu_us)
            verdicts.add(
                f"SDK CPU at most 1.00x raw aiohttp's ({loop_name})",
                f"{sdk_cpu / raw_cpu:.2f}x",
                sdk_cpu <= raw_cpu,
            )
            verdicts.add(
                f"SDK CPU below httpx's ({loop_name})",
                f"{sdk_cpu / httpx_cpu:.2f}x",
                sdk_cpu < httpx_cpu,
            )

        report += [
            "",
            "### Connections",
            "",
            "| event loop | TCP connections opened |",
            "|---|---|",
        ]
        for loop_name, loop_factory in loops:
            opened = connections(fake, connection_count, pool_size, loop_factory)
            report.append(f"| {loop_name} | {opened} |")
            verdicts.add(
                f"{connection_count} exchanges open at most pool_size={pool_size} "
                f"connections ({loop_name})",
                str(opened),
                opened <= pool_size,
            )
        report += [
            "",
            f"{connection_count} exchanges, {CONCURRENCY} at a time, `pool_size={pool_size}`, "
            "connections counted at the fake.",
        ]

        report += ["", "### The bulk command", ""]
        report += [
            "| event loop | codes | peak RSS (MiB) | records per second |",
            "|---|---|---|---|",
        ]
        for loop_name, _ in loops:
            measured = {
                size: bulk(fake.url, size, uvloop=loop_name == "uvloop") for size in (small, large)
            }
            for size, (rss, rate) in measured.items():
                report.append(f"| {loop_name} | {size} | {rss:.1f} | {rate:.0f} |")
            growth = measured[large][0] - measured[small][0]
            verdicts.add(
                f"bulk peak RSS grows by at most 10 MiB, {small} to {large} codes ({loop_name})",
                f"{growth:+.1f} MiB",
                growth <= 10,
            )
            # "Does not drop": within the noise of one run on a shared machine.
            ratio = measured[large][1] / measured[small][1]
            verdicts.add(
                f"bulk rate does not drop from {small} to {large} codes ({loop_name})",
                f"{ratio:.2f}x",
                ratio >= 0.9,
            )
    finally:
        fake.stop()

    times = import_times(7 if args.quick else 15)
    ratio = statistics.median(times["baidu_swan_auth"]) / statistics.median(times["aiohttp"])
    report += [
        "",
        "### Import time",
        "",
        "| module | import time (ms) |",
        "|---|---|",
        *(f"| `import {module}` | {_spread(values, 1)} |" for module, values in times.items()),
    ]
    verdicts.add("import time at most 1.2x aiohttp's", f"{ratio:.2f}x", ratio <= 1.2)
    report[3:3] = ["", "### Targets", "", *verdicts.lines]

    text = "\n".join(report) + "\n"
    print(text)
    if args.write_docs:
        page = ROOT / "docs" / "benchmarks.md"
        before, marker, _ = page.read_text(encoding="utf-8").partition("<!-- results -->")
        if not marker:
            raise SystemExit("docs/benchmarks.md has no <!-- results --> marker")
        page.write_text(f"{before}{marker}\n\n{text}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
