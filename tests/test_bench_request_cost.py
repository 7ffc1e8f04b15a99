"""benchmarks/request_cost.py: its arguments, and the configuration it gives snakeway for each kind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import request_cost
from benchmarks.certs import CA


def test_defaults_per_kind() -> None:
    plain = request_cost.arguments([])
    assert (plain.kind, plain.count, plain.only) == ("plain", 1000, None)
    big = request_cost.arguments(["--kind", "big"])
    assert (big.kind, big.count, big.bytes) == ("big", 100, 1 << 20)
    tls = request_cost.arguments(["--kind", "tls-new", "--count", "300", "--only", "native"])
    assert (tls.kind, tls.count, tls.only) == ("tls-new", 300, "native")


def test_bytes_and_count_as_plain_arguments_mean_a_big_body() -> None:
    args = request_cost.arguments(["65536", "50"])
    assert (args.kind, args.bytes, args.count) == ("big", 65536, 50)
    with pytest.raises(SystemExit):
        request_cost.arguments(["65536"])


@pytest.mark.parametrize("kind", request_cost.KINDS)
def test_snakeway_accepts_the_configuration_of_each_kind(kind: str, tmp_path: Path) -> None:
    plan = request_cost.Plan(kind, request_cost.BODY, tmp_path)
    if plan.tls:
        plan.cert, plan.key, plan.ca = CA().write_leaf(tmp_path, "site", ["localhost", "127.0.0.1"])
    path = tmp_path / "snakeway.hcl"
    path.write_text(request_cost.config(plan, 18080, 18081))
    assert ("tls = {" in path.read_text()) == (kind in ("https", "tls-new"))
    checked = subprocess.run([sys.executable, "-m", "snakeway", "check", "--config", str(path)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
