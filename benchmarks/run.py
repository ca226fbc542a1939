"""Benchmarks: client CPU, throughput, connections, bulk memory and import time.

    python benchmarks/run.py                        # one full run, a few minutes
    python benchmarks/run.py --quick                # smaller sizes, a smoke test
    python benchmarks/run.py --runs 5 --write-docs  # five whole runs, into docs/benchmarks.md

The fake Baidu runs in a separate process (benchmarks/fake_server.py), so the CPU measured here
is the client's alone. Contenders (the SDK, raw aiohttp and httpx on the v1 API; the SDK and raw
aiohttp on v2, each with a token already in hand) are measured alternately, round by round
(A B C D E, B C D E A, ...), in one run, so drift in the machine's speed spreads over all of them;
medians and min/max are reported. With ``--runs N`` the whole run is repeated N times, each in a
fresh interpreter, and every figure is the median of the N runs' figures, with their min and max
as the spread.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from baidu_swan_auth import SwanAuthClient
from baidu_swan_auth.testing import (
    DEFAULT_CLIENT_ID,
    DEFAULT_SECRET,
    GETSESSIONKEY_PATH,
    TOKEN_PATH,
)

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 32
WARM_UP = 200

_codes = itertools.count()


def _code(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_codes):09d}"


# -- the fake, in its own process ---------------------------------------------------------------


@dataclass(frozen=True)
class Urls:
    endpoint: str  # the v1 exchange URL
    openapi: str  # the base URL of the token and v2 getsessionkey APIs


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
        endpoint = self.process.stdout.readline().strip()
        openapi = self.process.stdout.readline().strip()
        if not endpoint or not openapi:
            raise RuntimeError("benchmarks/fake_server.py did not print its two URLs")
        self.urls = Urls(endpoint, openapi)

    @property
    def url(self) -> str:
        return self.urls.endpoint

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


async def sdk(urls: Urls, count: int) -> tuple[float, float]:
    async with SwanAuthClient(DEFAULT_CLIENT_ID, DEFAULT_SECRET, endpoint=urls.endpoint) as client:
        return await _measure(client.exchange, count, "sdk")


async def raw_aiohttp(urls: Urls, count: int) -> tuple[float, float]:
    # The twenty lines a user would write by hand.
    async with aiohttp.ClientSession() as session:

        async def exchange(code: str) -> Any:
            form = {"code": code, "client_id": DEFAULT_CLIENT_ID, "sk": DEFAULT_SECRET}
            async with session.post(urls.endpoint, data=form) as response:
                answer = await response.json()
            if "openid" not in answer:
                raise RuntimeError(answer)
            return answer

        return await _measure(exchange, count, "raw")


async def httpx_client(urls: Urls, count: int) -> tuple[float, float]:
    import httpx  # noqa: PLC0415 (only this contender needs it)

    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(limits=limits) as client:

        async def exchange(code: str) -> Any:
            form = {"code": code, "client_id": DEFAULT_CLIENT_ID, "sk": DEFAULT_SECRET}
            answer = (await client.post(urls.endpoint, data=form)).json()
            if "openid" not in answer:
                raise RuntimeError(answer)
            return answer

        return await _measure(exchange, count, "httpx")


async def sdk_v2(urls: Urls, count: int) -> tuple[float, float]:
    async with SwanAuthClient(
        DEFAULT_CLIENT_ID,
        DEFAULT_SECRET,
        endpoint=urls.endpoint,
        api="getsessionkey",
        openapi_url=urls.openapi,
    ) as client:
        # A warm token, as in a server that has been up a while: no measured exchange fetches one.
        await client.access_token()
        return await _measure(client.exchange, count, "sdk2")


async def raw_aiohttp_v2(urls: Urls, count: int) -> tuple[float, float]:
    # The v2 exchange by hand, with a token fetched once beforehand (outside the measurement).
    async with aiohttp.ClientSession() as session:
        token_form = {
            "grant_type": "client_credentials",
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_SECRET,
            "scope": "smartapp_snsapi_base",
        }
        async with session.post(urls.openapi + TOKEN_PATH, data=token_form) as response:
            token = (await response.json())["access_token"]
        url = urls.openapi + GETSESSIONKEY_PATH

        async def exchange(code: str) -> Any:
            async with session.post(url, data={"access_token": token, "code": code}) as response:
                answer = await response.json()
            if answer.get("errno") != 0:
                raise RuntimeError(answer)
            data = answer["data"]
            return data["open_id"], data["session_key"]

        return await _measure(exchange, count, "raw2")


async def sdk_otel_noop(urls: Urls, count: int) -> tuple[float, float]:
    """The SDK with its OpenTelemetry instrumentation on, recording into the API's no-op
    providers: the cost of the instrumentation itself."""
    from opentelemetry.metrics import NoOpMeterProvider  # noqa: PLC0415
    from opentelemetry.trace import NoOpTracerProvider  # noqa: PLC0415

    from baidu_swan_auth.otel import BaiduSwanAuthInstrumentor  # noqa: PLC0415

    instrumentor = BaiduSwanAuthInstrumentor()
    instrumentor.instrument(
        tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider()
    )
    try:
        return await sdk(urls, count)
    finally:
        instrumentor.uninstrument()


async def sdk_otel_sdk(urls: Urls, count: int) -> tuple[float, float]:
    """The SDK instrumented, recording into OpenTelemetry's SDK: every span exported to memory
    and every metric aggregated, as an application with a real pipeline pays (minus the export)."""
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
        InMemorySpanExporter,
    )

    from baidu_swan_auth.otel import BaiduSwanAuthInstrumentor  # noqa: PLC0415

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    instrumentor = BaiduSwanAuthInstrumentor()
    instrumentor.instrument(
        tracer_provider=tracer_provider,
        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
    )
    try:
        return await sdk(urls, count)
    finally:
        instrumentor.uninstrument()
        spans.clear()
        tracer_provider.shutdown()


@dataclass(frozen=True)
class Contender:
    name: str
    api: str  # "v1" or "v2": each is compared with the SDK on the same API
    run: Callable[[Urls, int], Awaitable[tuple[float, float]]]


CONTENDERS = [
    Contender("SwanAuthClient.exchange", "v1", sdk),
    Contender("SwanAuthClient.exchange, OpenTelemetry on (no-op API)", "v1", sdk_otel_noop),
    Contender("SwanAuthClient.exchange, OpenTelemetry on (SDK, in memory)", "v1", sdk_otel_sdk),
    Contender("raw aiohttp", "v1", raw_aiohttp),
    Contender("httpx.AsyncClient", "v1", httpx_client),
    Contender("SwanAuthClient.exchange", "v2", sdk_v2),
    Contender("raw aiohttp", "v2", raw_aiohttp_v2),
]
SDK = {"v1": "SwanAuthClient.exchange v1", "v2": "SwanAuthClient.exchange v2"}


def _key(contender: Contender) -> str:
    return f"{contender.name} {contender.api}"


def _run_on(loop_factory: Callable[[], asyncio.AbstractEventLoop] | None, coroutine: Any) -> Any:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coroutine)


def cpu_and_throughput(
    urls: Urls, count: int, pairs: int, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None
) -> dict[str, dict[str, list[float]]]:
    """Per contender: client CPU µs per exchange and exchanges per second, one of each a round."""
    results: dict[str, dict[str, list[float]]] = {
        _key(contender): {"cpu_us": [], "per_second": []} for contender in CONTENDERS
    }
    for pair in range(pairs):
        shift = pair % len(CONTENDERS)
        for contender in CONTENDERS[shift:] + CONTENDERS[:shift]:
            cpu, wall = _run_on(loop_factory, contender.run(urls, count))
            results[_key(contender)]["cpu_us"].append(cpu / count * 1e6)
            results[_key(contender)]["per_second"].append(count / wall)
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


# -- one whole run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    count: int
    pairs: int
    small: int
    large: int
    connection_count: int
    pool_size: int
    import_pairs: int

    @classmethod
    def of(cls, quick: bool, pairs: int | None) -> Sizes:
        return cls(
            count=500 if quick else 5000,
            pairs=pairs or (2 if quick else 5),
            small=1_000 if quick else 10_000,
            large=10_000 if quick else 200_000,
            connection_count=2_000 if quick else 10_000,
            pool_size=100,
            import_pairs=7 if quick else 15,
        )


def _loops() -> list[tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]]:
    loops: list[tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]] = [("asyncio", None)]
    try:
        import uvloop  # noqa: PLC0415 (optional)
    except ImportError:
        return loops
    return [*loops, ("uvloop", uvloop.new_event_loop)]


def measure(sizes: Sizes) -> dict[str, Any]:
    """One whole run: every measurement once, as plain data (it crosses a process boundary)."""
    loops = _loops()
    run: dict[str, Any] = {
        "loops": [name for name, _ in loops],
        "cpu": {},
        "connections": {},
        "bulk": {},
    }
    fake = Fake()
    try:
        for loop_name, loop_factory in loops:
            run["cpu"][loop_name] = cpu_and_throughput(
                fake.urls, sizes.count, sizes.pairs, loop_factory
            )
        for loop_name, loop_factory in loops:
            run["connections"][loop_name] = connections(
                fake, sizes.connection_count, sizes.pool_size, loop_factory
            )
        for loop_name, _ in loops:
            run["bulk"][loop_name] = {
                str(size): bulk(fake.url, size, uvloop=loop_name == "uvloop")
                for size in (sizes.small, sizes.large)
            }
    finally:
        fake.stop()
    run["imports"] = import_times(sizes.import_pairs)
    return run


def measure_in_subprocesses(runs: int, options: list[str]) -> list[dict[str, Any]]:
    """``runs`` whole runs, one after the other, each in a fresh interpreter."""
    results = []
    with _folder() as folder:
        for number in range(1, runs + 1):
            print(f"run {number} of {runs}...", file=sys.stderr, flush=True)
            target = folder / f"run-{number}.json"
            subprocess.run(
                [sys.executable, __file__, *options, "--one-run-to", str(target)], check=True
            )
            results.append(json.loads(target.read_text(encoding="utf-8")))
    return results


# -- report ---------------------------------------------------------------------------------------


def _spread(values: list[float], digits: int = 0, suffix: str = "") -> str:
    """``median (min to max)``; a single value alone."""
    form = f"{{:.{digits}f}}{suffix}"
    median = form.format(statistics.median(values))
    if len(values) == 1:
        return median
    return f"{median} ({form.format(min(values))} to {form.format(max(values))})"


def _per_run(rounds: list[list[float]]) -> list[float]:
    """What a table shows: with one run, its rounds; with several, each run's median."""
    if len(rounds) == 1:
        return rounds[0]
    return [statistics.median(values) for values in rounds]


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


@dataclass
class Target:
    """One target's figure in each run, and the test it must pass."""

    text: str
    holds: Callable[[float], bool]
    render: Callable[[float], str]
    values: list[float] = field(default_factory=list)

    def measured(self) -> str:
        median = self.render(statistics.median(self.values))
        if len(self.values) == 1:
            return median
        return f"{median} ({self.render(min(self.values))} to {self.render(max(self.values))})"


def _ratio(value: float) -> str:
    return f"{value:.2f}x"


def _mib(value: float) -> str:
    return f"{value:+.1f} MiB"


def _count(value: float) -> str:
    return f"{value:.0f}"


def _at_most_one(ratio: float) -> bool:
    return ratio <= 1


def _cpu(run: dict[str, Any], loop: str, key: str) -> float:
    return float(statistics.median(run["cpu"][loop][key]["cpu_us"]))


def _targets(runs: list[dict[str, Any]], sizes: Sizes) -> list[Target]:
    """The targets, each with its figure from every run, in the order of the page."""
    targets: dict[str, Target] = {}

    def add(
        text: str, value: float, holds: Callable[[float], bool], render: Callable[[float], str]
    ) -> None:
        targets.setdefault(text, Target(text, holds, render)).values.append(value)

    small, large, pool = sizes.small, sizes.large, sizes.pool_size
    for run in runs:
        for loop in run["loops"]:
            sdk1, sdk2 = _cpu(run, loop, SDK["v1"]), _cpu(run, loop, SDK["v2"])
            add(
                f"SDK v1 CPU at most 1.00x raw aiohttp's ({loop})",
                sdk1 / _cpu(run, loop, "raw aiohttp v1"),
                _at_most_one,
                _ratio,
            )
            add(
                f"SDK v1 CPU below httpx's ({loop})",
                sdk1 / _cpu(run, loop, "httpx.AsyncClient v1"),
                lambda ratio: ratio < 1,
                _ratio,
            )
            add(
                f"SDK v2 CPU, warm token, at most 1.00x raw aiohttp v2's ({loop})",
                sdk2 / _cpu(run, loop, "raw aiohttp v2"),
                _at_most_one,
                _ratio,
            )
        for loop in run["loops"]:
            add(
                f"{sizes.connection_count} exchanges open at most pool_size={pool} "
                f"connections ({loop})",
                run["connections"][loop],
                lambda opened: opened <= pool,
                _count,
            )
        for loop in run["loops"]:
            (rss_small, rate_small), (rss_large, rate_large) = (
                run["bulk"][loop][str(small)],
                run["bulk"][loop][str(large)],
            )
            add(
                f"bulk peak RSS grows by at most 10 MiB, {small} to {large} codes ({loop})",
                rss_large - rss_small,
                lambda growth: growth <= 10,
                _mib,
            )
            # "Does not drop": within the noise of one run on a shared machine.
            add(
                f"bulk rate does not drop from {small} to {large} codes ({loop})",
                rate_large / rate_small,
                lambda ratio: ratio >= 0.9,
                _ratio,
            )
        imports = run["imports"]
        add(
            "import time at most 1.2x aiohttp's",
            statistics.median(imports["baidu_swan_auth"]) / statistics.median(imports["aiohttp"]),
            lambda ratio: ratio <= 1.2,
            _ratio,
        )
    return list(targets.values())


def _targets_table(targets: list[Target]) -> list[str]:
    several = len(targets[0].values) > 1
    if not several:
        lines = ["| target | measured | holds |", "|---|---|---|"]
    else:
        lines = ["| target | measured | holds | runs where it holds |", "|---|---|---|---|"]
    for target in targets:
        held = target.holds(statistics.median(target.values))
        row = f"| {target.text} | {target.measured()} | {'yes' if held else '**no**'} |"
        if several:
            row += f" {sum(map(target.holds, target.values))} of {len(target.values)} |"
        lines.append(row)
    return lines


def _run_by_run(targets: list[Target]) -> list[str]:
    runs = len(targets[0].values)
    lines = [
        "| target | " + " | ".join(f"run {number}" for number in range(1, runs + 1)) + " |",
        "|---|" + "---|" * runs,
    ]
    for target in targets:
        lines.append(f"| {target.text} | " + " | ".join(map(target.render, target.values)) + " |")
    return lines


def _cpu_table(runs: list[dict[str, Any]], loop: str, sizes: Sizes) -> list[str]:
    if len(runs) == 1:
        caption = f"{sizes.pairs} alternating rounds; median (min to max) of the rounds."
    else:
        caption = (
            f"{sizes.pairs} alternating rounds in each of {len(runs)} runs; median of the runs' "
            "medians (the lowest to the highest run's median); 'vs the SDK' is the median of "
            "the runs' ratios."
        )
    lines = [
        f"{sizes.count} exchanges per round after {WARM_UP} to warm up, {CONCURRENCY} at a time, "
        + caption
        + " v2 with a token already fetched; each client is compared with the SDK on its API.",
        "",
        "| client | API | client CPU per exchange (µs) | vs the SDK | exchanges per second |",
        "|---|---|---|---|---|",
    ]
    for contender in CONTENDERS:
        key = _key(contender)
        cpu = _per_run([run["cpu"][loop][key]["cpu_us"] for run in runs])
        per_second = _per_run([run["cpu"][loop][key]["per_second"] for run in runs])
        ratio = statistics.median(
            [_cpu(run, loop, key) / _cpu(run, loop, SDK[contender.api]) for run in runs]
        )
        lines.append(
            f"| {contender.name} | {contender.api} | {_spread(cpu)} | {ratio:.2f}x "
            f"| {_spread(per_second)} |"
        )
    return lines


def _about_runs(runs: int) -> str:
    if runs == 1:
        return (
            "One run of the command. On a shared machine the figures move between runs; "
            "`--runs N` repeats the whole run and gives each figure's spread."
        )
    return (
        f"Every figure is the median of {runs} whole runs of the command, each in a fresh "
        f"interpreter; in brackets, the lowest and the highest of the {runs} runs' own figures "
        f"(the spread). On this {os.cpu_count()}-core machine the fake Baidu, in its own process, "
        "competes with the client for the same cores, so a difference smaller than the spread "
        "is noise, not a gain or a regression."
    )


def render(runs: list[dict[str, Any]], sizes: Sizes, command: str) -> str:
    loops = runs[0]["loops"]
    targets = _targets(runs, sizes)
    report = [
        f"Run on {datetime.date.today().isoformat()}: {_machine()}.",
        "",
        f"Command: `{command}`",
        "",
        _about_runs(len(runs)),
    ]
    if len(loops) == 1:
        report += ["", "uvloop is not installed: everything ran on asyncio only."]
    report += ["", "### Targets", "", *_targets_table(targets)]
    if len(runs) > 1:
        report += ["", "### Run by run", "", *_run_by_run(targets)]
    for loop in loops:
        report += ["", f"### Client CPU and throughput ({loop})", ""]
        report += _cpu_table(runs, loop, sizes)

    report += [
        "",
        "### Connections",
        "",
        "| event loop | TCP connections opened |",
        "|---|---|",
    ]
    for loop in loops:
        opened = [float(run["connections"][loop]) for run in runs]
        report.append(f"| {loop} | {_spread(opened)} |")
    report += [
        "",
        f"{sizes.connection_count} exchanges, {CONCURRENCY} at a time, "
        f"`pool_size={sizes.pool_size}`, connections counted at the fake.",
    ]

    report += ["", "### The bulk command", ""]
    report += [
        "| event loop | codes | peak RSS (MiB) | records per second |",
        "|---|---|---|---|",
    ]
    for loop in loops:
        for size in (sizes.small, sizes.large):
            rss = [run["bulk"][loop][str(size)][0] for run in runs]
            rate = [run["bulk"][loop][str(size)][1] for run in runs]
            report.append(f"| {loop} | {size} | {_spread(rss, 1)} | {_spread(rate)} |")

    report += [
        "",
        "### Import time",
        "",
        "| module | import time (ms) |",
        "|---|---|",
    ]
    for module in runs[0]["imports"]:
        times = _per_run([run["imports"][module] for run in runs])
        report.append(f"| `import {module}` | {_spread(times, 1)} |")
    if len(runs) == 1:
        report += ["", f"{sizes.import_pairs} alternating imports of each; median (min to max)."]
    else:
        report += [
            "",
            f"{sizes.import_pairs} alternating imports of each in each run; median of the runs' "
            "medians (the lowest to the highest run's median).",
        ]
    return "\n".join(report) + "\n"


def write_docs(text: str) -> None:
    page = ROOT / "docs" / "benchmarks.md"
    before, marker, _ = page.read_text(encoding="utf-8").partition("<!-- results -->")
    if not marker:
        raise SystemExit("docs/benchmarks.md has no <!-- results --> marker")
    page.write_text(f"{before}{marker}\n\n{text}", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--write-docs", action="store_true", help="rewrite docs/benchmarks.md")
    parser.add_argument("--pairs", type=int, default=None, help="alternating rounds (default 5)")
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="whole runs, each in a fresh interpreter; figures are their median (default 1)",
    )
    # Internal: measure one whole run and write it as JSON (what each of --runs N does).
    parser.add_argument("--one-run-to", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    sizes = Sizes.of(args.quick, args.pairs)

    if args.one_run_to is not None:
        args.one_run_to.write_text(json.dumps(measure(sizes)), encoding="utf-8")
        return 0

    options = (["--quick"] if args.quick else []) + (
        ["--pairs", str(args.pairs)] if args.pairs else []
    )
    if args.runs == 1:
        runs = [measure(sizes)]
    else:
        runs = measure_in_subprocesses(args.runs, options)
        options += ["--runs", str(args.runs)]
    text = render(runs, sizes, " ".join(["python benchmarks/run.py", *options]))
    print(text)
    if args.write_docs:
        write_docs(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
