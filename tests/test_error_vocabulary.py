"""Every exception class snakeway defines for callers derives from SnakewayError.

A caller (the CLI, the per-connection boundary, a test) can then tell an error snakeway raised on
purpose from a bug with one ``except``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import snakeway
from snakeway.errors import SnakewayError


def defined_exceptions() -> list[type[BaseException]]:
    found = []
    for module_info in pkgutil.walk_packages(snakeway.__path__, "snakeway."):
        if module_info.name.endswith(".__main__"):  # runs the command line when imported
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
                and not name.startswith("_")  # control flow inside one module, never raised out of it
            ):
                found.append(value)
    return found


def test_every_public_exception_is_a_snakeway_error() -> None:
    exceptions = defined_exceptions()
    names = {e.__name__ for e in exceptions}
    assert {"RequestFailed", "UpstreamConnectError", "ConfigError", "StoreError"} <= names
    assert [e.__qualname__ for e in exceptions if not issubclass(e, SnakewayError)] == []


def test_subclassed_trio_and_builtin_errors_are_still_caught_as_before() -> None:
    import trio

    from snakeway.tcp import SendTimeout
    from snakeway.uri import TargetError

    assert issubclass(SendTimeout, trio.BrokenResourceError)  # the transports' callers catch that
    assert issubclass(TargetError, ValueError)
