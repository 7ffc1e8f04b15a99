"""The benchmark's CPU time per request: /proc/<pid>/stat, the arithmetic, and the table."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from benchmarks import clients, cpu, report
from benchmarks.procs import Proc
from benchmarks.rows import CPU_KEY, Row
from tests.helpers import closed_ports

# A real line's shape (proc(5)), with a command name that holds spaces and parentheses.
STAT = ("4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1190 0 0 0 "
        "731 129 55 21 20 0 3 0 123456 300000000 20000 18446744073709551615 1 1 0 0 0 0 0 16781312 16386 0 0 0 17 1 0 0")


def test_parse_stat_counts_fields_from_the_last_parenthesis() -> None:
    stat = cpu.parse_stat(STAT)
    assert (stat.pid, stat.session) == (4242, 4242)
    assert (stat.utime, stat.stime, stat.cutime, stat.cstime) == (731, 129, 55, 21)
    assert stat.ticks == 731 + 129 + 55 + 21


def test_parse_stat_of_this_process() -> None:
    stat = cpu.parse_stat(Path("/proc/self/stat").read_text())
    assert stat.pid == os.getpid()
    assert stat.session == os.getsid(0)


@pytest.mark.parametrize("text", ["", "4242 S 1 2 3", "4242 (name) S 1 2 3"])
def test_parse_stat_rejects_what_is_not_a_stat_line(text: str) -> None:
    with pytest.raises(ValueError):
        cpu.parse_stat(text)


# Burns CPU in a grandchild that exits and is reaped, then in itself, then waits to be stopped.
BURNER = r"""
import os, sys, time
def burn(seconds):
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass
if os.fork() == 0:
    burn(0.3)
    os._exit(0)
os.wait()
burn(0.3)
print("burnt", flush=True)
time.sleep(60)
"""


def test_cpu_of_a_process_tree_counts_its_reaped_children(tmp_path: Path) -> None:
    proc = Proc("burner", [sys.executable, "-c", BURNER], tmp_path / "burner.log")
    try:
        deadline = time.monotonic() + 60
        while b"burnt" not in (tmp_path / "burner.log").read_bytes():
            assert proc.alive() and time.monotonic() < deadline, proc.log_tail()
            time.sleep(0.05)
        # Its own 0.3 s and the grandchild's 0.3 s, which moved to its cutime when it was reaped.
        assert proc.cpu_seconds() >= 0.55
        assert proc.session_pids() == [proc.pid]
    finally:
        proc.stop()
    assert proc.popen.returncode is not None


def test_cpu_of_a_session_without_processes_is_zero() -> None:
    assert cpu.session_cpu_seconds(2**22 + 12345) == 0.0  # above the largest pid Linux hands out


def test_per_unit_arithmetic() -> None:
    assert cpu.per_unit_us(10.0, 10.5, 5000) == pytest.approx(100.0)
    assert cpu.per_unit_us(10.0, 10.5, 0) is None
    assert cpu.per_unit_us(10.5, 10.0, 10) == 0.0  # a sample never goes backwards; if it seems to, no CPU


@pytest.mark.parametrize(("us", "text"), [
    (152.4, "CPU 152 µs/req"), (8.26, "CPU 8.3 µs/msg"), (1250.0, "CPU 1.25 ms/MiB"), (None, ""), (float("nan"), ""),
])
def test_cpu_text(us: float | None, text: str) -> None:
    assert cpu.cpu_text(us, text.rsplit("/", 1)[-1] if text else "req") == text


def _row(number: int, unit: str, figures: dict[str, list[tuple[float, float]]]) -> Row:
    """A row with, per contender, (value, CPU µs per unit) for each round."""
    row = Row(number, "a row", unit, True, 100.0)
    for name, rounds in figures.items():
        for round_no, (value, per_unit) in enumerate(rounds):
            row.cells[name].add(round_no, value, p50_ms=1.0, p99_ms=2.0, **{CPU_KEY: per_unit, "cpu_s": 1.0})
    return row


def test_table_shows_cpu_per_unit_and_its_ratio() -> None:
    row = _row(1, "req/s", {"snakeway": [(6000, 150.0), (6200, 160.0), (5800, 140.0)],
                            "caddy": [(16000, 60.0), (16000, 80.0), (16000, 70.0)]})
    text = report.table([row])
    assert "6,000 req/s · p50 1.00 ms · p99 2.0 ms · CPU 150 µs/req" in text
    assert "16,000 req/s · p50 1.00 ms · p99 2.0 ms · CPU 70 µs/req" in text
    # Per round: 150/60, 160/80, 140/70 -> 2.5, 2.0, 2.0; the median is shown.
    assert "| 0.38× · CPU 2.00× · p99 1.00× |" in text
    assert report.ratio_text(row, "nginx") == "—"


def test_table_units_of_the_other_rows() -> None:
    big = _row(4, "MiB/s", {"snakeway": [(800, 1300.0)]})
    ws = _row(5, "messages/s", {"snakeway": [(6000, 45.0)]})
    new = _row(3, "handshakes/s", {"snakeway": [(900, 1100.0)]})
    assert report.cell_text(big, "snakeway") == "800 MiB/s · p99 2.0 ms · CPU 1.30 ms/MiB"
    assert report.cell_text(ws, "snakeway") == "6,000 msg/s · p99 2.00 ms · CPU 45 µs/msg"
    assert report.cell_text(new, "snakeway").endswith("· CPU 1.10 ms/conn")


def test_a_cell_without_cpu_figure_shows_none() -> None:
    row = Row(1, "a row", "req/s", True, 100.0)
    row.cells["nginx"].add(0, 50000, p50_ms=0.5, p99_ms=3.0)
    assert report.cell_text(row, "nginx") == "50,000 req/s · p50 0.50 ms · p99 3.0 ms"


def test_json_keeps_cpu_figures() -> None:
    row = _row(2, "req/s", {"snakeway": [(5000, 200.0), (5000, 220.0)], "nginx": [(40000, 25.0), (40000, 22.0)]})
    data = json.loads(json.dumps(report.to_json([row], {"machine": {}})))
    cell = data["rows"][0]["cells"]["snakeway"]
    assert cell["extra_median"][CPU_KEY] == 210.0
    assert cell["extra_by_round"][CPU_KEY] == {"1": 200.0, "2": 220.0}
    assert data["rows"][0]["cpu_ratio_snakeway_over_nginx"] == pytest.approx((200 / 25 + 220 / 22) / 2)
    assert data["rows"][0]["cpu_ratio_snakeway_over_caddy"] is None



def test_ratio_shows_p99_per_round_median() -> None:
    row = Row(5, "WebSocket", "messages/s", True, 100.0)
    for round_no, (mine, theirs) in enumerate([(3.0, 2.0), (4.0, 2.0), (2.0, 2.0)]):
        row.cells["snakeway"].add(round_no, 1000, p99_ms=mine, **{CPU_KEY: 40.0})
        row.cells["caddy"].add(round_no, 1000, p99_ms=theirs, **{CPU_KEY: 40.0})
    # Per round 1.5, 2.0, 1.0: the median is 1.5.
    assert report.ratio_text(row, "caddy") == "1.00× · CPU 1.00× · p99 1.50×"
    data = report.to_json([row], {"machine": {}})
    assert data["rows"][0]["p99_ratio_snakeway_over_caddy"] == 1.5


@pytest.mark.parametrize(("values", "fraction", "expected"), [
    ([1.0] * 99 + [500.0], 0.99, 1.0),  # nearest rank: the 99th of 100
    ([1.0] * 98 + [500.0, 500.0], 0.99, 500.0),
    ([3.0, 1.0, 2.0], 0.5, 2.0),
    ([4.0], 0.99, 4.0),
    ([], 0.99, None),
])
def test_quantile_by_nearest_rank(values: list[float], fraction: float, expected: float | None) -> None:
    assert clients.quantile(values, fraction) == expected


def test_websocket_echo_client_times_each_round_trip(tmp_path: Path) -> None:
    port = closed_ports(1)[0]
    echo = Proc("ws-echo", [sys.executable, "-m", "benchmarks.ws_echo", str(port)], tmp_path / "echo.log")
    try:
        echo.wait_port(port, 30)
        result = clients.ws_echo(f"ws://127.0.0.1:{port}/", 0.5, connections=2)
    finally:
        echo.stop()
    assert result.errors == 0
    assert result.rate > 50  # two connections echoing for half a second on loopback
    assert 0 < result.p50_ms <= result.p99_ms < 500
