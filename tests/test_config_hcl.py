"""HCL text -> plain values and line numbers (snakeway.config.hcl)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snakeway.config import hcl
from snakeway.errors import ConfigError

FILE = Path("conf/main.hcl")


def parse(text: str) -> hcl.Document:
    return hcl.parse(textwrap.dedent(text), FILE)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return str(info.value).splitlines()


def test_values_are_plain_python() -> None:
    doc = parse(
        """
        server {
          version = 1
          ratio   = 2.5
          small   = -3
          big     = 1e3
          on      = true
          off     = false
          nothing = null
          name    = "api"
          list    = [1, "two", [3]]
          obj     = { a = 1, "b c" = 2, d: 3 }
        }
        """
    )
    assert doc.data == {
        "server": {
            "version": 1,
            "ratio": 2.5,
            "small": -3,
            "big": 1000.0,
            "on": True,
            "off": False,
            "nothing": None,
            "name": "api",
            "list": [1, "two", [3]],
            "obj": {"a": 1, "b c": 2, "d": 3},
        }
    }
    assert type(doc.data["server"]["version"]) is int  # type: ignore[index]


def test_blocks_nest_by_type_then_label() -> None:
    doc = parse(
        """
        server { version = 1 }
        include { ingresses = "x/*.hcl" }
        ingress "web" { a = 1 }
        ingress "api" { a = 2 }
        """
    )
    assert doc.data == {
        "server": {"version": 1},
        "include": {"ingresses": "x/*.hcl"},
        "ingress": {"web": {"a": 1}, "api": {"a": 2}},
    }


def test_lines_of_every_key_path() -> None:
    doc = parse(
        """\
        server {
          version = 1
        }
        ingress "web" {
          services = [
            {
              name = "api"
              upstreams = [{ port = 1 },
                { port = 2 }]
            },
          ]
        }
        """
    )
    lines = doc.lines
    assert lines[("server",)] == 1
    assert lines[("server", "version")] == 2
    assert lines[("ingress", "web")] == 4
    assert lines[("ingress", "web", "services")] == 5
    assert lines[("ingress", "web", "services", 0)] == 6
    assert lines[("ingress", "web", "services", 0, "name")] == 7
    assert lines[("ingress", "web", "services", 0, "upstreams", 1, "port")] == 9
    # A key that is not there takes its parent's line.
    assert doc.line(("ingress", "web", "services", 0, "routes")) == 6
    assert doc.line(()) == 1


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (r'"plain"', "plain"),
        (r'"say \"hi\""', 'say "hi"'),
        (r'"back\\slash"', "back\\slash"),
        (r'"a\nb\tc\rd"', "a\nb\tc\rd"),
        (r'"\u00fc\U0001F40D"', "ü🐍"),
        (r'"bücher"', "bücher"),
        (r'"$${not_interpolated} %%{nor_this}"', "${not_interpolated} %{nor_this}"),
        (r'"cost: $5, 50%"', "cost: $5, 50%"),
        (r'""', ""),
    ],
)
def test_string_escapes(literal: str, value: str) -> None:
    assert parse(f"s = {literal}\n").data == {"s": value}


def test_heredocs() -> None:
    doc = parse(
        """\
        a = <<EOT
        line one
          line "two"
        EOT
        b = <<-EOT
            indented
              more
            EOT
        """
    )
    assert doc.data == {"a": 'line one\n  line "two"\n', "b": "indented\n  more\n"}


def test_comments_are_ignored() -> None:
    doc = parse(
        """
        # hash
        // slashes
        /* block
           comment */
        a = 1 # trailing
        """
    )
    assert doc.data == {"a": 1}


@given(st.text())
def test_any_string_round_trips_through_quote(text: str) -> None:
    assert hcl.parse(f"s = {hcl.quote(text)}\n", FILE).data == {"s": text}


@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63), max_size=5))
def test_integer_lists_round_trip(numbers: list[int]) -> None:
    assert hcl.parse(f"n = [{', '.join(map(str, numbers))}]\n", FILE).data == {"n": numbers}


def test_syntax_error_has_file_and_line() -> None:
    assert problems(
        """\
        server {
          version = 1
          port = = 2
        }
        """
    ) == ['conf/main.hcl:3: syntax error at column 10: unexpected "="']


def test_unclosed_block_is_reported_at_end_of_file() -> None:
    (line,) = problems("server {\n  version = 1\n")
    assert line.startswith("conf/main.hcl:3: syntax error: unexpected end of file")


def test_all_value_problems_are_reported_together() -> None:
    assert problems(
        """\
        server {
          version = 1
          version = 2
          a = "\\q"
          b = "${var.x}"
          c = loopback
          d = 1 + 2
          e = { k = 1, k = 2 }
        }
        server {
        }
        ingress "web" {
        }
        ingress "web" {
        }
        ingress {
        }
        """
    ) == [
        'conf/main.hcl:3: server.version: "version" is already defined on line 2',
        "conf/main.hcl:4: server.a: invalid escape sequence \\q in string",
        'conf/main.hcl:5: server.b: interpolation and template directives are not supported (write "$${" or '
        '"%%{" for a literal "${" or "%{")',
        'conf/main.hcl:6: server.c: bare word loopback: strings must be quoted, as in "loopback"',
        "conf/main.hcl:7: server.d: only literal values are supported here (no expressions or references)",
        'conf/main.hcl:8: server.e.k: "k" is already defined on line 8',
        'conf/main.hcl:10: server: "server" is already defined on line 1',
        "conf/main.hcl:14: ingress.web: this block is already defined on line 12",
        'conf/main.hcl:16: ingress: "ingress" is already defined on line 12',
    ]


def test_unreadable_and_undecodable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.hcl"
    with pytest.raises(ConfigError) as info:
        hcl.load(missing)
    assert str(info.value) == f"{missing}:1: cannot read file: No such file or directory"

    latin1 = tmp_path / "latin1.hcl"
    latin1.write_bytes(b'a = "ok"\nb = "b\xfccher"\n')
    with pytest.raises(ConfigError) as info:
        hcl.load(latin1)
    assert str(info.value) == f"{latin1}:2: file is not valid UTF-8"


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ((), ""),
        (("server",), "server"),
        (("ingress", "web", "services", 0, "upstreams", 1, "endpoint", "port"),
         "ingress.web.services[0].upstreams[1].endpoint.port"),
        (("ingress", "my.site", "bind"), 'ingress."my.site".bind'),
        ((0, "name"), "[0].name"),
    ],
)
def test_format_key_path(path: hcl.KeyPath, text: str) -> None:
    assert hcl.format_key_path(path) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [("80", 'string "80"'), (80, "number 80"), (1.5, "number 1.5"), (True, "bool true"), (None, "null"),
     ([1], "list"), ({}, "object"), ("x" * 50, 'string "' + "x" * 37 + '..."')],
)
def test_describe(value: object, text: str) -> None:
    assert hcl.describe(value) == text


@pytest.mark.parametrize(
    ("value", "depth"),
    [
        pytest.param("[" * 5000 + "]" * 5000, 5000, id="lists"),
        pytest.param("{ k = " * 2000 + "1" + " }" * 2000, 2000, id="objects"),
        pytest.param("-(" * 3000 + "1" + ")" * 3000, 3000, id="signs"),
        pytest.param("[" * (hcl.MAX_NESTING - 1) + "]" * (hcl.MAX_NESTING - 1), hcl.MAX_NESTING - 1, id="just-fits"),
    ],
)
def test_deep_nesting_is_one_problem_not_a_crash(value: str, depth: int) -> None:
    text = f"a = 1\nb = {value}\n"
    if depth < hcl.MAX_NESTING:  # the top-level body is a level too
        assert "b" in hcl.parse(text, FILE).data
        return
    (line,) = problems(text)
    assert line.startswith("conf/main.hcl:2: b")
    assert line.endswith(f"nested more than {hcl.MAX_NESTING} levels deep")


def test_deeply_nested_blocks_are_one_problem_not_a_crash() -> None:
    (line,) = problems("a {\n" * 3000 + "}\n" * 3000)
    assert line.startswith(f"conf/main.hcl:{hcl.MAX_NESTING}: a.a.a")
    assert line.endswith(f"nested more than {hcl.MAX_NESTING} levels deep")


def test_parentheses_cost_no_nesting() -> None:
    assert hcl.parse("a = " + "(" * 5000 + "-1" + ")" * 5000 + "\n", FILE).data == {"a": -1}


def test_integer_literal_too_long_to_convert_is_a_problem() -> None:
    assert problems("a = 1\nb = " + "9" * 5000 + "\n") == ["conf/main.hcl:2: b: integer of 5000 digits is too large"]
    assert hcl.parse("n = " + "9" * 4000 + "\n", FILE).data == {"n": int("9" * 4000)}
