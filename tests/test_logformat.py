"""``server.log``: its settings, and the JSON formatter of the server log."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from snakeway import logs
from snakeway.config.load import load_config
from snakeway.config.model import LOG_LEVELS, LogFormat, LogSettings
from snakeway.errors import ConfigError


def load(tmp_path: Path, log: str) -> LogSettings:
    path = tmp_path / "snakeway.hcl"
    path.write_text(f"server {{\n  version = 1\n  log = {log}\n}}\n")
    return load_config(path).server.log


def test_settings_and_their_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "{}") == LogSettings(LogFormat.TEXT, logging.INFO)
    assert load(tmp_path, '{ format = "json", level = "debug" }') == LogSettings(LogFormat.JSON, logging.DEBUG)
    assert LOG_LEVELS == {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                          "error": logging.ERROR}


@pytest.mark.parametrize(
    ("log", "message"),
    [
        ('{ format = "xml" }', 'server.log.format: unknown log format "xml"; expected one of: text, json'),
        ('{ level = "loud" }', 'server.log.level: unknown log level "loud"; expected one of: debug, info, warning, error'),
        ('{ colour = true }', 'server.log.colour: unknown key "colour"'),
    ],
)
def test_a_wrong_setting_names_file_line_and_key(tmp_path: Path, log: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, log)
    assert str(caught.value.problems[0]).startswith(f"{tmp_path / 'snakeway.hcl'}:3: {message}")


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad")
        except ValueError:
            exc_info = sys.exc_info()
    rec = logging.LogRecord("snakeway.x", logging.WARNING, __file__, 1, message, args, exc_info)
    rec.created = 1764927279.5  # 2025-12-05 09:34:39.500 UTC
    return rec


def test_a_json_record_is_one_line_with_its_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    formatter = logs.formatter(LogSettings(LogFormat.JSON), with_pid=False)
    line = formatter.format(record("reload failed:\n%s", "line two", exc=True))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["time"] == "2025-12-05T09:34:39.500Z"
    assert (entry["level"], entry["logger"], entry["message"]) == ("warning", "snakeway.x", "reload failed:\nline two")
    assert "ValueError: bad" in entry["traceback"] and "worker" not in entry
    monkeypatch.setattr(logs, "_worker", 3)
    assert json.loads(formatter.format(record("hi")))["worker"] == 3


def test_text_keeps_the_logging_line() -> None:
    text = logs.formatter(LogSettings(LogFormat.TEXT), with_pid=True).format(record("hi %d", 5))
    assert text.endswith(f" WARNING [{record('x').process}] snakeway.x: hi 5")
