"""Fuzzing the configuration loader: any file gives a Config or a ConfigError whose problems are located.

Inputs, from the least to the most structured: arbitrary bytes; arbitrary text through the HCL front end;
valid configurations mutated as text (characters and lines); valid configurations mutated as values
(a value replaced, a key dropped or added, then written back as HCL); and documents of random nesting,
made of snakeway's own key names, blocks with labels and every kind of HCL value, literal or not.

The property: :func:`load_config` returns a :class:`Config` or raises :class:`ConfigError`, and every
problem names a file the loader read and a line within it. Any other exception is a bug. The example
counts come from the hypothesis profile (``tests/conftest.py``): a few hundred in ``make test``, many
thousands in ``make fuzz``.
"""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from snakeway.config import hcl
from snakeway.config.load import load_config
from snakeway.config.model import Config
from snakeway.errors import ConfigError

pytestmark = pytest.mark.fuzz

SEEDS = [
    textwrap.dedent(text)
    for text in (
        """\
        server {
          version  = 1
          pid_file = "run/snakeway.pid"
          workers  = 2
          shutdown = { drain_seconds = 5 }
          upstream = { connection_timeout_seconds = 3, read_timeout_seconds = 30.5, connection_pool_size = 16,
                       pool_idle_seconds = 45, failure_cooldown_seconds = 0 }
          client = { header_timeout_seconds = 7, idle_timeout_seconds = 20, max_header_bytes = 8192 }
          tls_automation = {
            renew_within_days      = 30
            check_interval_seconds = 600
            acme = { directory_url = "http://127.0.0.1:14000/dir", contact_email = ["ops@example.com"] }
            cert_store = { type = "filesystem", cert_dir = "certs" }
          }
        }
        include {
          ingresses = ["sites/*.hcl"]
        }
        ingress "web" {
          bind = { interface = "127.0.0.1", port = 8443,
                   tls = { mode = "internal", domains = ["localhost", "127.0.0.1"], default = "localhost" },
                   redirect_http_to_https = { port = 8080, status = 308 } }
          services = [{
            name = "api"
            load_balancing_strategy = "round_robin"
            routes = [{ hosts = ["*", "*.example.test"], path = "/api", enable_websocket = true,
                        ws_max_connections = 10, max_body_bytes = 1024 }]
            upstreams = [{ endpoint = { host = "127.0.0.1", port = 9000 }, weight = 2 },
                         { endpoint = { host = "[::1]", port = 9001 } }]
          }]
          static_files = [{
            routes = [{ hosts = ["*"], path = "/", file_dir = "www", index = "index.html", directory_listing = true }]
          }]
        }
        ingress "auto" {
          bind = { port = 443, tls = { mode = "acme", domains = ["a.example.test", "b.example.test"],
                                        challenge = "tls-alpn-01", certificate_per_domain = true } }
          services = [{ name = "b", routes = [{ hosts = ["a.example.test"] }],
                        upstreams = [{ endpoint = { host = "backend.internal", port = 80 } }] }]
        }
        """,
        """\
        server {
          version = 1
          access_log = "off"
        }
        ingress "files" {
          bind = { interface = "loopback", port = 8081,
                   tls = { mode = "manual", certs = [{ cert = "certs/site.pem", key = "certs/site.key" }] } }
          static_files = [{ routes = [{ hosts = ["files.test"], file_dir = "www" }] }]
        }
        """,
        "server {\n  version = 1\n}\n",
    )
]
INCLUDED = """\
bind = { interface = "127.0.0.1", port = 8082 }
services = [{ name = "included", routes = [{ hosts = ["inc.test"] }],
              upstreams = [{ endpoint = { host = "127.0.0.1", port = 9002 } }] }]
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with what the seeds refer to: ``www/``, ``certs/``, ``run/`` and an included file."""
    base = tmp_path_factory.mktemp("config-fuzz")
    for name in ("www", "certs", "run", "sites"):
        (base / name).mkdir()
    (base / "www" / "index.html").write_text("hi")
    (base / "certs" / "site.pem").write_text("not checked when loading")
    (base / "certs" / "site.key").write_text("not checked when loading")
    (base / "sites" / "one.hcl").write_text(INCLUDED)
    return base


def check_outcome(entry: Path, data: bytes) -> Config | ConfigError:
    """Write ``data`` to ``entry`` and load it: a Config, or a ConfigError whose problems are all located."""
    entry.write_bytes(data)
    try:
        return load_config(entry)
    except ConfigError as error:
        assert error.problems
        for problem in error.problems:
            assert problem.file == entry or problem.file.parent == entry.parent / "sites", problem
            raw = data if problem.file == entry else problem.file.read_bytes()
            assert 1 <= problem.line <= raw.count(b"\n") + 1, problem
            assert str(problem).startswith(f"{problem.file}:{problem.line}: ")
        return error


def test_the_seeds_are_valid(folder: Path) -> None:
    for seed in SEEDS:
        assert isinstance(check_outcome(folder / "main.hcl", seed.encode()), Config), seed


@given(data=st.binary(max_size=2000))
@example(data=b"\xff\xfe")
@example(data=b"server {\n  version = 1\n}\n\x80")
def test_any_bytes(folder: Path, data: bytes) -> None:
    check_outcome(folder / "main.hcl", data)


@given(text=st.text(max_size=500))
def test_any_text_through_the_hcl_front_end(text: str) -> None:
    path = Path("fuzz.hcl")
    try:
        document = hcl.parse(text, path)
    except ConfigError as error:
        assert all(p.file == path and 1 <= p.line <= text.count("\n") + 1 for p in error.problems), error
    else:
        assert isinstance(document.data, dict)


# --- valid configurations, mutated as text -----------------------------------------------------------------------

HCL_CHARS = st.sampled_from(list('{}[]()="\\$%<>-+*/.,:#\n\r\t 0123456789eEaz_') + ["${", "%{", "<<EOT\n", "\nEOT\n",
                                                                                 "\\u", "\x00", "\ufeff", "é"])


@st.composite
def text_mutations(draw: st.DrawFn) -> str:
    """A seed with characters inserted, deleted or replaced, and lines dropped, doubled or swapped."""
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "line-drop", "line-double", "line-swap"]))
        if action == "insert":
            text = text[:pos] + draw(HCL_CHARS) + text[pos:]
        elif action == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 20)) :]
        elif action == "replace":
            text = text[:pos] + draw(HCL_CHARS) + text[pos + 1 :]
        else:
            lines = text.splitlines(keepends=True)
            if not lines:
                continue
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            if action == "line-drop":
                del lines[i]
            elif action == "line-double":
                lines.insert(i, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "".join(lines)
    return text


@given(text=text_mutations())
def test_valid_configurations_mutated_as_text(folder: Path, text: str) -> None:
    check_outcome(folder / "main.hcl", text.encode("utf-8", "surrogatepass"))


# --- valid configurations, mutated as values ---------------------------------------------------------------------

SEED_DATA = [hcl.parse(seed, Path("seed.hcl")).data for seed in SEEDS]

KEYS = [
    "server", "include", "ingress", "version", "pid_file", "state_dir", "shutdown", "drain_seconds", "upstream",
    "client", "tls_automation", "workers", "access_log", "ingresses", "bind", "services", "static_files",
    "interface", "port", "tls", "redirect_http_to_https", "name", "load_balancing_strategy", "routes", "upstreams",
    "hosts", "path", "enable_websocket", "ws_max_connections", "max_body_bytes", "file_dir", "index",
    "directory_listing", "endpoint", "host", "weight", "connection_timeout_seconds", "read_timeout_seconds",
    "connection_pool_size", "pool_idle_seconds", "failure_cooldown_seconds", "header_timeout_seconds",
    "idle_timeout_seconds", "max_header_bytes", "acme", "ca_file", "cert", "cert_dir", "cert_store",
    "certificate_per_domain", "certs", "challenge", "check_interval_seconds", "contact_email", "data_dir",
    "default", "directory_url", "domains", "handshake_timeout_seconds", "key", "key_type", "mode",
    "renew_within_days", "status", "type", "max_concurrent_orders", "rate_limits", "new_orders_per_3h",
    "failed_validations_per_name_per_hour", "duplicate_certificates_per_week", "certificates_per_domain_per_week",
]  # fmt: skip
WORDS = [
    "", "/", "/api", "*", "*.", "*.a.test", "a.test", "localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0", "all",
    "loopback", "manual", "internal", "acme", "http-01", "tls-alpn-01", "memory", "filesystem", "round_robin",
    "least_connections", "random", "www", "certs", "sites/*.hcl", "**", "../", "..", ".", "a\x00b", "ops@example.com",
    "https://acme.test/dir", "http://localhost/dir", "ftp://x", "stderr", "off", "index.html", "é.test", "xn--",
    "a" * 300, "${x}", "%{if}", "\n", "ecdsa-p256", "rsa-2048",
]  # fmt: skip
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, 255, 256, 307, 308, 65535, 65536, 10**400]),
    st.floats(allow_nan=False),
    st.sampled_from([float("inf"), -float("inf"), 1e-300, 0.5]),
)
LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, st.sampled_from(WORDS), st.text(max_size=30),
                   st.builds(list), st.builds(dict))  # fresh ones: the mutations change them in place
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, min_size=1, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, min_size=1, max_size=4),
    max_leaves=12,
)


def render(value: object) -> str:
    """A plain value as HCL text (numbers too large for a literal are written with all their digits)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value or value in (float("inf"), -float("inf")):
            return "1e999" if value > 0 else "-1e999"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return hcl.quote(value)
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{\n" + "".join(f"{hcl.quote(k)} = {render(v)}\n" for k, v in value.items()) + "}"


def paths_in(value: object, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every key path inside ``value``, containers included."""
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += paths_in(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += paths_in(child, (*prefix, index))
    return out


@st.composite
def value_mutations(draw: st.DrawFn) -> str:
    """A seed's values with some replaced, keys dropped or added; written back as HCL attributes."""
    data = copy.deepcopy(draw(st.sampled_from(SEED_DATA)))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in paths_in(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: object = data
        for part in path[:-1]:
            parent = parent[part]  # type: ignore[index]
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(VALUES)  # type: ignore[index]
        elif action == "drop":
            del parent[path[-1]]  # type: ignore[arg-type]
        else:
            target = parent[path[-1]]  # type: ignore[index]
            if isinstance(target, dict):
                target[draw(st.sampled_from(KEYS))] = draw(VALUES)
            elif isinstance(target, list):
                target.append(draw(VALUES))
    return "".join(f"{hcl.quote(key)} = {render(value)}\n" for key, value in data.items())


@given(text=value_mutations())
def test_valid_configurations_mutated_as_values(folder: Path, text: str) -> None:
    check_outcome(folder / "main.hcl", text.encode("utf-8", "surrogatepass"))


# --- documents of random nesting ---------------------------------------------------------------------------------

NAMES = st.sampled_from(KEYS) | st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,6}", fullmatch=True)
SCALAR_TEXT = st.one_of(
    NUMBERS.map(render),
    st.sampled_from(["[]", "{}"]),
    st.sampled_from(["true", "false", "null", "-1", "-1.5", "- 2", "-x", "0x1F", "1e3", "01", "1.", ".5", "bare",
                     "a.b", "f(1)", "1 + 2", "!true", "a ? 1 : 2", "x[0]", '"${x}"', '"%{ if x }y%{ endif }"',
                     '"$${x}"', '"\\q"', '"\\ud800"', '"\\U0010FFFF"', '"\\U00110000"', "<<EOT\nhi ${x}\nEOT",
                     "<<-EOT\n  a\n    b\n  EOT", "[for x in y: x]", "{for k, v in m: k => v}", "(1)", "((1))"]),
    st.sampled_from(WORDS).map(hcl.quote),
    st.text(max_size=20).map(hcl.quote),
)


def _list(items: list[str]) -> str:
    return "[" + ", ".join(items) + "]"


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{ " + ", ".join(f"{k} = {v}" for k, v in pairs) + " }"


VALUE_TEXT = st.recursive(
    SCALAR_TEXT,
    lambda inner: st.lists(inner, min_size=1, max_size=4).map(_list)
    | st.lists(st.tuples(NAMES | st.text(max_size=6).map(hcl.quote), inner), min_size=1, max_size=4).map(_object)
    | inner.map(lambda v: f"({v})")
    | inner.map(lambda v: f"-{v}"),
    max_leaves=10,
)


def _block(name: str, labels: list[str], body: str) -> str:
    return " ".join([name, *labels]) + " {\n" + body + "}\n"


ATTRIBUTE = st.builds(lambda k, v: f"{k} = {v}\n", NAMES, VALUE_TEXT)
LABELS = st.lists(st.sampled_from(WORDS).map(hcl.quote) | NAMES, max_size=2)
BODY = st.recursive(
    st.lists(ATTRIBUTE, max_size=4).map("".join),
    lambda inner: st.builds(
        lambda attributes, blocks, first: "".join(blocks + attributes if first else attributes + blocks),
        st.lists(ATTRIBUTE, max_size=3),
        st.lists(st.builds(_block, NAMES, LABELS, inner), min_size=1, max_size=3),
        st.booleans(),
    ),
    max_leaves=8,
)


@given(body=BODY, with_server=st.booleans())
@example(body="server {\n  version = " + "9" * 5000 + "\n}\n", with_server=False)
@example(body="a = " + "[" * 2000 + "]" * 2000 + "\n", with_server=True)
@example(body="a = " + "(" * 2000 + "1" + ")" * 2000 + "\n", with_server=True)
@example(body="a = " + "{ b = " * 1000 + "1" + " }" * 1000 + "\n", with_server=True)
@example(body="a {\n" * 1000 + "}\n" * 1000, with_server=True)
@example(body='state_dir = "a\\u0000b"\n', with_server=True)
def test_random_nesting_of_blocks_and_values(folder: Path, body: str, with_server: bool) -> None:
    text = ("server {\n  version = 1\n" + body + "}\n") if with_server else body
    check_outcome(folder / "main.hcl", text.encode("utf-8", "surrogatepass"))
