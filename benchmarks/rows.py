"""The table's rows: what each one measures, per contender and per round, and how it degrades.

A cell holds one value per round (``by_round``); its figure is the median. The
ratios snakeway/Caddy and snakeway/nginx are computed round by round and their
median is shown, because two proxies measured a few seconds apart on the same
shared machine see the same weather, while absolute figures drift between runs.
A cell that cannot be measured says why (``na``), and the run goes on.
"""

from __future__ import annotations

import os
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks import clients, cpu
from benchmarks.contenders import BIG_BYTES, NAMES, Running, Setup
from benchmarks.procs import Proc

MiB = 1024 * 1024
# The extra figure of rows 1-5: CPU microseconds of the contender's processes per request, MiB or message.
CPU_KEY = "cpu_us_per_unit"


@dataclass
class Cell:
    by_round: dict[int, float] = field(default_factory=dict)
    extra: dict[str, dict[int, float]] = field(default_factory=dict)
    na: str | None = None
    notes: list[str] = field(default_factory=list)

    def add(self, round_no: int, value: float, **extra: float) -> None:
        self.by_round[round_no] = value
        self.add_extra(round_no, **extra)

    def add_extra(self, round_no: int, **extra: float) -> None:
        """Secondary figures, kept even when the main measurement of the round fails."""
        for key, number in extra.items():
            self.extra.setdefault(key, {})[round_no] = number

    def median(self, key: str | None = None) -> float | None:
        values = list((self.extra.get(key, {}) if key else self.by_round).values())
        return statistics.median(values) if values else None


@dataclass
class Row:
    number: int
    title: str
    unit: str
    higher_is_better: bool
    budget_s: float
    cells: dict[str, Cell] = field(default_factory=lambda: {name: Cell() for name in NAMES})
    note: str = ""
    spent_s: float = 0.0  # in this row's own measurements: rows run interleaved, round by round

    def left(self) -> float:
        return self.budget_s - self.spent_s

    def ratio(self, other: str, key: str | None = None) -> float | None:
        """Median over rounds of snakeway's value (or extra figure ``key``) divided by ``other``'s in the same round."""
        mine, theirs = ((cell.extra.get(key, {}) if key else cell.by_round)
                        for cell in (self.cells["snakeway"], self.cells[other]))
        ratios = [mine[r] / theirs[r] for r in mine if r in theirs and theirs[r]]
        return statistics.median(ratios) if ratios else None

    def na(self, name: str, reason: str) -> None:
        cell = self.cells[name]
        if cell.na is None and not cell.by_round:
            cell.na = reason


def measure(row: Row, name: str, round_no: int, fn: Callable[[], tuple[float, dict[str, float]]],
            need: float = 0.0) -> None:
    """Run one measurement into ``row``; any failure becomes the cell's reason, never a crash."""
    cell = row.cells[name]
    if cell.na is not None:
        return
    if row.left() < need:
        cell.notes.append(f"round {round_no + 1} skipped: row time budget ({row.budget_s:.0f} s) used up")
        if not cell.by_round:
            cell.na = f"n/a: row time budget ({row.budget_s:.0f} s) used up"
        return
    started = time.monotonic()
    try:
        value, extra = fn()
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a failed cell must not stop the run
        message = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        cell.notes.append(f"round {round_no + 1}: {message}")
        if os.environ.get("BENCH_DEBUG"):
            traceback.print_exc()
        if not cell.by_round and round_no >= 0:
            cell.na = f"failed: {message}"
        print(f"    {name}: failed: {message}", flush=True)
        return
    finally:
        row.spent_s += time.monotonic() - started
    cell.add(round_no, value, **extra)


# --- rows 1-5: throughput, all contenders running, in alternation ------------------------------


def throughput_rows(seconds: float, rounds: int) -> list[Row]:
    budget = (rounds + 1) * len(NAMES) * (seconds + 10) + 60  # every round of every contender, with slack
    return [
        Row(1, "HTTP/1.1 keep-alive, 32 connections", "req/s", True, budget),
        Row(2, "HTTPS keep-alive, 32 connections", "req/s", True, budget),
        Row(3, "New TLS connection per request (Connection: close)", "handshakes/s", True, budget),
        Row(4, "1 MiB response bodies, 32 connections", "MiB/s", True, budget),
        Row(5, "WebSocket echo through the proxy", "messages/s", True, budget),
    ]


def _wrk_value(url: str, seconds: float, cpu_seconds: Callable[[], float], *, close: bool = False,
               big: bool = False) -> tuple[float, dict[str, float]]:
    before = cpu_seconds()
    result = clients.wrk(url, seconds, close=close)
    after = cpu_seconds()
    failed = result.errors + result.non_2xx
    if result.requests and failed > 0.01 * result.requests:
        raise RuntimeError(f"{failed} of {result.requests} requests failed (socket errors or non-2xx)")
    units = result.requests * BIG_BYTES / MiB if big else result.requests  # MiB of body, or requests
    extra = {"p50_ms": result.p50_ms, "p99_ms": result.p99_ms, "errors": float(failed), **_cpu(before, after, units)}
    value = result.rps * BIG_BYTES / MiB if big else result.rps
    return value, extra


def _ws_value(url: str, seconds: float, cpu_seconds: Callable[[], float]) -> tuple[float, dict[str, float]]:
    connections = int(os.environ.get("BENCH_WS_CONNECTIONS", "8"))
    before = cpu_seconds()
    result = clients.ws_echo(url, seconds, connections=connections)
    after = cpu_seconds()
    if result.errors:
        raise RuntimeError(f"{result.errors} of {connections} WebSocket connections failed")
    return result.rate, {"p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
                         **_cpu(before, after, result.rate * seconds)}


def _cpu(before: float, after: float, units: float) -> dict[str, float]:
    """The extra figures of a window: CPU seconds used, and microseconds per unit (request, MiB, message)."""
    per_unit = cpu.per_unit_us(before, after, units)
    return {"cpu_s": after - before} if per_unit is None else {"cpu_s": after - before, CPU_KEY: per_unit}


def sanity(run: Running, setup: Setup) -> str | None:
    """Why a contender does not answer correctly (hello, the 1 MiB file, HTTPS), or None."""
    try:
        if clients.get(run.http_port) != (200, b"hello"):
            return f"GET / on port {run.http_port} did not answer 200 hello"
        status, body = clients.get(run.http_port, "/big")
        if status != 200 or len(body) != BIG_BYTES:
            return f"GET /big answered {status} with {len(body)} bytes"
        if run.https_port is not None:
            context = clients.client_context(setup.ca)
            if clients.get(run.https_port, tls=context, sni="localhost") != (200, b"hello"):
                return "HTTPS GET / did not answer 200 hello"
    except OSError as exc:
        return f"sanity check failed: {exc}"
    return None


def _plan(row: Row, run: Running, setup: Setup, seconds: float) -> Callable[[], tuple[float, dict[str, float]]] | None:
    """What to run for ``row`` against ``run``, or None when it does not apply (the cell says why)."""
    http = f"http://127.0.0.1:{run.http_port}"
    https = f"https://127.0.0.1:{run.https_port}" if run.https_port else None
    if row.number in (2, 3) and https is None:
        row.na(run.name, "n/a: the upstream speaks plain HTTP only")
        return None
    proc: Proc = run.proc
    if row.number == 5 and run.name == "upstream" and setup.ws_proc is not None:
        proc = setup.ws_proc  # "upstream direct" for WebSockets is the echo server
    cpu_seconds = proc.cpu_seconds
    if row.number == 1:
        return lambda: _wrk_value(http + "/", seconds, cpu_seconds)
    if row.number == 2:
        return lambda: _wrk_value(f"{https}/", seconds, cpu_seconds)
    if row.number == 3:
        def handshakes() -> tuple[float, dict[str, float]]:
            value, extra = _wrk_value(f"{https}/", seconds, cpu_seconds, close=True)
            return value, {**extra, "tls_resumed": clients.resumed_share(run.https_port or 0)}
        return handshakes
    if row.number == 4:
        return lambda: _wrk_value(http + "/big", seconds, cpu_seconds, big=True)
    ws = f"ws://127.0.0.1:{setup.ws_port}/ws" if run.name == "upstream" else f"ws://127.0.0.1:{run.http_port}/ws"
    return lambda: _ws_value(ws, seconds, cpu_seconds)


def run_throughput(rows: list[Row], running: dict[str, Running], setup: Setup, rounds: int, seconds: float) -> None:
    """Rounds outside, rows inside, contenders innermost, their order rotated every round."""
    order = [name for name in NAMES if name in running]
    warm = max(1.0, seconds / 5)
    print(f"warming up ({warm:.0f} s per contender and row)", flush=True)
    for row in rows[:4]:
        for name in order:
            plan = _plan(row, running[name], setup, warm)
            if plan is not None:
                measure(row, name, -1, plan)  # round -1: discarded
    for row in rows:
        for cell in row.cells.values():
            cell.by_round.pop(-1, None)
            for values in cell.extra.values():
                values.pop(-1, None)
    for round_no in range(rounds):
        shift = round_no % len(order) if order else 0
        turn = order[shift:] + order[:shift]
        for row in rows:
            print(f"round {round_no + 1}/{rounds}, row {row.number}: {row.title} ({', '.join(turn)})", flush=True)
            for name in turn:
                plan = _plan(row, running[name], setup, seconds)
                if plan is not None:
                    measure(row, name, round_no, plan, need=seconds + 5)
                    value = row.cells[name].by_round.get(round_no)
                    if value is not None:
                        print(f"    {name}: {value:,.0f} {row.unit}", flush=True)
