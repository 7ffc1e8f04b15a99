"""contrib/compile_h11.py: which h11 snakeway runs on, and that it still does what snakeway needs of it."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import h11

SCRIPT = Path(__file__).resolve().parent.parent / "contrib" / "compile_h11.py"


def test_check_tells_compiled_from_plain_h11_and_runs_what_snakeway_relies_on() -> None:
    # `make install` compiles h11 in place where it can; either way the check must agree with what is
    # imported, and a compiled h11 passes it only if events built with _parsed=True and the state
    # machine's _cstate.keep_alive still work (the script's exchange uses both).
    compiled = h11._connection.__file__.endswith(str(sysconfig.get_config_var("EXT_SUFFIX")))
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith(f"h11 {h11.__version__}: " + ("compiled" if compiled else "plain (")), result
    assert result.returncode == (0 if compiled else 1), result
