"""Loading and validating configuration files (snakeway.config.load).

Problems are asserted as the user sees them: ``FILE:LINE: key.path: message``.
"""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from snakeway import hostnames
from snakeway.config.hcl import quote
from snakeway.config.load import load_config
from snakeway.config.model import (
    Bind,
    ClientSettings,
    Config,
    Endpoint,
    Ingress,
    Route,
    ServerSettings,
    Service,
    StaticSite,
    Strategy,
    Upstream,
    UpstreamSettings,
)
from snakeway.errors import ConfigError, SnakewayError

SERVER = "server {\n  version = 1\n}\n"

# A valid entry file; error cases below change one thing in it.
BASE = """\
server {
  version = 1
}
ingress "web" {
  bind = { interface = "loopback", port = 8080 }
  services = [{
    name      = "api"
    routes    = [{ hosts = ["example.test"], path = "/api" }]
    upstreams = [{ endpoint = { host = "127.0.0.1", port = 9000 } }]
  }]
}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value).splitlines()


def line_of(text: str, needle: str) -> int:
    """1-based line of the first occurrence of ``needle``: expected lines are found, not counted by hand."""
    assert needle in text, needle
    return text[: text.index(needle)].count("\n") + 1


def test_full_config_builds_the_exact_model(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    main = write(
        tmp_path,
        "main.hcl",
        """\
        server {
          version  = 1
          pid_file = "/tmp/snakeway.pid"
          shutdown = { drain_seconds = 5 }
          upstream = { connection_timeout_seconds = 3, read_timeout_seconds = 30.5, connection_pool_size = 16,
                       pool_idle_seconds = 45, failure_cooldown_seconds = 0 }
          client = { header_timeout_seconds = 7, idle_timeout_seconds = 20, max_header_bytes = 8192,
                     send_timeout_seconds = 30, body_timeout_seconds = 12.5, buffer_request_body_bytes = 0,
                     max_header_count = 50, underscores_in_headers = true }
        }
        include {
          ingresses = "ingress.d/*.hcl"
        }
        ingress "web" {
          bind = { interface = "127.0.0.1", port = 8080 }
          services = [{
            name = "api"
            load_balancing_strategy = "round_robin"
            routes = [
              { hosts = ["Example.test", "*.bücher.test"], path = "/api/" },
              { hosts = ["*"], path = "/ws", enable_websocket = true, ws_max_connections = 100,
                max_body_bytes = 1048576, ws_idle_timeout_seconds = 300 },
            ]
            upstreams = [
              { endpoint = { host = "127.0.0.1", port = 9000 }, weight = 2 },
              { endpoint = { host = "[::1]", port = 9001 } },
            ]
          }]
          static_files = [{ routes = [{ hosts = ["*"], path = "/", file_dir = "docs", index = "index.html",
                                        directory_listing = true }] }]
        }
        """,
    )
    admin = write(
        tmp_path,
        "ingress.d/admin.hcl",
        """\
        bind = { interface = "all", port = 9443 }
        services = [{
          name = "admin"
          load_balancing_strategy = "random"
          routes = [{ hosts = ["admin.test"] }]
          upstreams = [{ endpoint = { host = "Backend.Internal", port = 7000 } }]
        }]
        """,
    )
    assert load_config(main) == Config(
        server=ServerSettings(
            version=1,
            pid_file=Path("/tmp/snakeway.pid"),
            drain_seconds=5.0,
            upstream=UpstreamSettings(
                connection_timeout_seconds=3.0,
                read_timeout_seconds=30.5,
                connection_pool_size=16,
                pool_idle_seconds=45.0,
                failure_cooldown_seconds=0.0,
            ),
            client=ClientSettings(
                header_timeout_seconds=7.0,
                idle_timeout_seconds=20.0,
                max_header_bytes=8192,
                send_timeout_seconds=30.0,
                body_timeout_seconds=12.5,
                buffer_request_body_bytes=0,
                max_header_count=50,
                underscores_in_headers=True,
            ),
        ),
        ingresses=(
            Ingress(
                name="web",
                bind=Bind(interface="127.0.0.1", port=8080),
                services=(
                    Service(
                        name="api",
                        routes=(
                            Route(hosts=("example.test", "*.xn--bcher-kva.test"), path="/api"),
                            Route(
                                hosts=("*",),
                                path="/ws",
                                enable_websocket=True,
                                ws_max_connections=100,
                                max_body_bytes=1048576,
                                ws_idle_timeout_seconds=300.0,
                            ),
                        ),
                        upstreams=(
                            Upstream(Endpoint("127.0.0.1", 9000), weight=2),
                            Upstream(Endpoint("::1", 9001), weight=1),
                        ),
                        strategy=Strategy.ROUND_ROBIN,
                    ),
                ),
                static_files=(
                    StaticSite(
                        route=Route(hosts=("*",), path="/"),
                        file_dir=(tmp_path / "docs").resolve(),
                        index="index.html",
                        directory_listing=True,
                    ),
                ),
                source=main,
            ),
            Ingress(
                name="admin",
                bind=Bind(interface="0.0.0.0", port=9443),
                services=(
                    Service(
                        name="admin",
                        routes=(Route(hosts=("admin.test",), path="/"),),
                        upstreams=(Upstream(Endpoint("backend.internal", 7000)),),
                        strategy=Strategy.RANDOM,
                    ),
                ),
                source=admin,
            ),
        ),
        source=main,
    )


def test_minimal_config_uses_model_defaults(tmp_path: Path) -> None:
    main = write(tmp_path, "main.hcl", SERVER)
    assert load_config(main) == Config(server=ServerSettings(), ingresses=(), source=main)


def test_defaults_inside_an_ingress(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    main = write(
        tmp_path,
        "main.hcl",
        SERVER
        + """
        ingress "site" {
          bind = { port = 80 }
          static_files = [{ routes = [
            { hosts = ["a.test"], file_dir = "www" },
            { hosts = ["b.test"], file_dir = "www", index = "" },
            { hosts = ["c.test"], file_dir = "www", index = null },
          ] }]
        }
        """,
    )
    (ingress,) = load_config(main).ingresses
    assert ingress.bind == Bind("0.0.0.0", 80)
    assert ingress.services == ()
    assert [(s.route.path, s.index, s.directory_listing) for s in ingress.static_files] == [
        ("/", "index.html", False),
        ("/", None, False),
        ("/", None, False),
    ]


@pytest.mark.parametrize(
    ("old", "new", "needle", "key_path", "message"),
    [
        ("port = 8080", 'port = "80"', "port", "ingress.web.bind.port", 'expected an integer, got string "80"'),
        ("port = 8080", "port = true", "port", "ingress.web.bind.port", "expected an integer, got bool true"),
        ("port = 8080", "port = 80.5", "port", "ingress.web.bind.port", "expected an integer, got number 80.5"),
        ("port = 8080", "port = 0", "port", "ingress.web.bind.port", "must be between 1 and 65535, got 0"),
        ("port = 8080", "port = 65536", "port", "ingress.web.bind.port", "must be between 1 and 65535, got 65536"),
        ('"loopback"', '"eth0"', "interface", "ingress.web.bind.interface",
         'expected "loopback", "all" or an IP address, got "eth0"'),
        ("port = 8080", "port = 8080, tls = {}", "tls", "ingress.web.bind.tls.mode", "required key is missing"),
        ("port = 8080", "port = 8080, tlz = {}", "tlz", "ingress.web.bind.tlz",
         'unknown key "tlz" (did you mean "tls"?); allowed keys: interface, port, tls, redirect_http_to_https'),
        ("port = 9000", "port = 9000, tls = true", "tls",
         "ingress.web.services[0].upstreams[0].endpoint.tls", 'unknown key "tls"; allowed keys: host, port'),
        ("  bind =", "  admin = 1\n  bind =", "admin", "ingress.web.admin",
         'unknown key "admin" (did you mean "bind_admin"?); allowed keys: bind, services, static_files, bind_admin'),
        ("  bind =", "  bind_admin = 1\n  bind =", "bind_admin", "ingress.web.bind_admin",
         "expected an object, got number 1"),
        ("  bind =", "  service = []\n  bind =", "service =", "ingress.web.service",
         'unknown key "service" (did you mean "services"?); allowed keys: bind, services, static_files, bind_admin'),
        ('  bind = { interface = "loopback", port = 8080 }\n', "", 'ingress "web"', "ingress.web.bind",
         "required key is missing"),
        ('name      = "api"', "", "services = [{", "ingress.web.services[0].name", "required key is missing"),
        ('name      = "api"', "name = 7", "name = 7", "ingress.web.services[0].name",
         "expected a string, got number 7"),
        ('name      = "api"', 'name = ""', 'name = ""', "ingress.web.services[0].name", "must not be empty"),
        ("upstreams = [{ endpoint = { host = \"127.0.0.1\", port = 9000 } }]", "upstreams = []", "upstreams",
         "ingress.web.services[0].upstreams", "must not be empty"),
        ("routes    = [{ hosts = [\"example.test\"], path = \"/api\" }]", "", "services = [{",
         "ingress.web.services[0].routes", "required key is missing"),
        ("port = 9000 } }", "port = 9000 }, weight = 0 }", "weight",
         "ingress.web.services[0].upstreams[0].weight", "must be at least 1, got 0"),
        ("port = 9000 } }", "port = 9000 }, weight = -2 }", "weight",
         "ingress.web.services[0].upstreams[0].weight", "must be at least 1, got -2"),
        ('name      = "api"', 'name = "api", x = 1', "x = 1", "ingress.web.services[0].x",
         'unknown key "x"; allowed keys: name, load_balancing_strategy, routes, upstreams'),
        ('host = "127.0.0.1"', 'host = "http://backend:80"', "host =",
         "ingress.web.services[0].upstreams[0].endpoint.host",
         'expected a host name or IP address (without scheme or port), got "http://backend:80"'),
        ('endpoint = { host = "127.0.0.1", port = 9000 }', 'endpoint = "127.0.0.1:9000"', "endpoint",
         "ingress.web.services[0].upstreams[0].endpoint", 'expected an object, got string "127.0.0.1:9000"'),
        ('path = "/api"', 'path = "api"', "path", "ingress.web.services[0].routes[0].path",
         'must start with /, got "api"'),
        ('path = "/api"', 'path = "/api?x=1"', "path", "ingress.web.services[0].routes[0].path",
         'must not contain a query, fragment, spaces or control characters, got "/api?x=1"'),
        ('hosts = ["example.test"]', 'hosts = ["a.*.b"]', "hosts", "ingress.web.services[0].routes[0].hosts[0]",
         'invalid host pattern "a.*.b": expected a host name (without port), "*.domain" (exactly one more label) '
         'or "*"'),
        ('hosts = ["example.test"]', 'hosts = ["example.test:8080"]', "hosts",
         "ingress.web.services[0].routes[0].hosts[0]",
         'invalid host pattern "example.test:8080": expected a host name (without port), "*.domain" (exactly one '
         'more label) or "*"'),
        ('hosts = ["example.test"]', 'hosts = ["*example.test"]', "hosts",
         "ingress.web.services[0].routes[0].hosts[0]",
         'invalid host pattern "*example.test": expected a host name (without port), "*.domain" (exactly one '
         'more label) or "*"'),
        ('hosts = ["example.test"]', "hosts = []", "hosts", "ingress.web.services[0].routes[0].hosts",
         "must not be empty"),
        ('hosts = ["example.test"]', 'hosts = "example.test"', "hosts", "ingress.web.services[0].routes[0].hosts",
         'expected a list, got string "example.test"'),
        ('path = "/api"', 'path = "/api", ws_max_connections = 5', "ws_max",
         "ingress.web.services[0].routes[0].ws_max_connections", "only applies with enable_websocket = true"),
        ('path = "/api"', 'path = "/api", ws_idle_timeout_seconds = 5', "ws_idle",
         "ingress.web.services[0].routes[0].ws_idle_timeout_seconds", "only applies with enable_websocket = true"),
        ('path = "/api"', 'path = "/api", enable_websocket = true, ws_idle_timeout_seconds = 0', "ws_idle",
         "ingress.web.services[0].routes[0].ws_idle_timeout_seconds", "must be greater than 0, got 0"),
        ('path = "/api"', 'path = "/api", enable_websocket = "yes"', "enable_websocket",
         "ingress.web.services[0].routes[0].enable_websocket", 'expected true or false, got string "yes"'),
        ('path = "/api"', 'path = "/api", max_body_bytes = -1', "max_body",
         "ingress.web.services[0].routes[0].max_body_bytes", "must be at least 0, got -1"),
        ("  services", "  static_files = { routes = [] }\n  services", "static_files", "ingress.web.static_files",
         "expected a list, got object"),
        ("  services", "  static_files = [{ routes = [] }]\n  services", "static_files",
         "ingress.web.static_files[0].routes", "must not be empty"),
        ("version = 1", "version = 2", "version", "server.version",
         "unsupported version 2; this snakeway reads version 1"),
        ("version = 1", 'version = "1"', "version", "server.version", 'expected an integer, got string "1"'),
        ("  version = 1\n", "", "server", "server.version", "required key is missing"),
        ("version = 1", "version = 1\n  pid_file = 5", "pid_file", "server.pid_file",
         "expected a string, got number 5"),
        ("version = 1", "version = 1\n  shutdown = { drain_seconds = -1 }", "drain", "server.shutdown.drain_seconds",
         "must be at least 0, got -1"),
        ("version = 1", "version = 1\n  upstream = { read_timeout_seconds = 0 }", "read",
         "server.upstream.read_timeout_seconds", "must be greater than 0, got 0"),
        ("version = 1", "version = 1\n  upstream = { connection_timeout_seconds = -5 }", "connection",
         "server.upstream.connection_timeout_seconds", "must be greater than 0, got -5"),
        ("version = 1", 'version = 1\n  client = { idle_timeout_seconds = "1m" }', "idle",
         "server.client.idle_timeout_seconds", 'expected a number of seconds, got string "1m"'),
        ("version = 1", "version = 1\n  client = { max_header_bytes = 0 }", "max_header",
         "server.client.max_header_bytes", "must be at least 1, got 0"),
        ("version = 1", "version = 1\n  client = { send_timeout_seconds = 0 }", "send_timeout",
         "server.client.send_timeout_seconds", "must be greater than 0, got 0"),
        ("version = 1", "version = 1\n  client = { body_timeout_seconds = -1 }", "body_timeout",
         "server.client.body_timeout_seconds", "must be greater than 0, got -1"),
        ("version = 1", "version = 1\n  client = { buffer_request_body_bytes = -1 }", "buffer_request",
         "server.client.buffer_request_body_bytes", "must be at least 0, got -1"),
        ("version = 1", "version = 1\n  client = { max_header_count = 0 }", "max_header_count",
         "server.client.max_header_count", "must be at least 1, got 0"),
        ("version = 1", 'version = 1\n  client = { underscores_in_headers = "on" }', "underscores",
         "server.client.underscores_in_headers", 'expected true or false, got string "on"'),
        ("server {\n  version = 1\n}\n", "", 'ingress "web"', "server", "required key is missing"),
        ('ingress "web" {', 'servers = 1\ningress "web" {', "servers", "servers",
         'unknown key "servers" (did you mean "server"?); allowed keys: server, include, ingress, bind_admin'),
    ],
)
def test_each_problem_names_file_line_and_key(
    tmp_path: Path, old: str, new: str, needle: str, key_path: str, message: str
) -> None:
    assert old in BASE
    text = BASE.replace(old, new, 1)
    main = write(tmp_path, "main.hcl", text)
    assert f"{main}:{line_of(text, needle)}: {key_path}: {message}" in problems(main)


def test_strategy_names(tmp_path: Path) -> None:
    text = BASE.replace('name      = "api"', 'name = "api"\n    load_balancing_strategy = "fastest"')
    main = write(tmp_path, "main.hcl", text)
    assert problems(main) == [
        f'{main}:8: ingress.web.services[0].load_balancing_strategy: unknown strategy "fastest"; '
        "expected one of: failover, round_robin, random"
    ]


def test_static_file_dir_must_be_an_existing_directory(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("not a directory")
    text = SERVER + textwrap.dedent(
        """\
        ingress "site" {
          bind = { port = 80 }
          static_files = [{ routes = [
            { hosts = ["a.test"], file_dir = "missing" },
            { hosts = ["b.test"], file_dir = "file.txt" },
            { hosts = ["c.test"], file_dir = ".", index = "../secret" },
          ] }]
        }
        """
    )
    main = write(tmp_path, "main.hcl", text)
    root = tmp_path.resolve()
    assert problems(main) == [
        f"{main}:7: ingress.site.static_files[0].routes[0].file_dir: directory does not exist: {root / 'missing'}",
        f"{main}:8: ingress.site.static_files[0].routes[1].file_dir: not a directory: {root / 'file.txt'}",
        f'{main}:9: ingress.site.static_files[0].routes[2].index: expected a file name, not a path, got "../secret"',
    ]


def test_several_problems_are_all_reported_in_line_order(tmp_path: Path) -> None:
    text = """\
    server {
      version = 2
    }
    ingress "web" {
      bind = { interface = "loopback", prot = 8080 }
      services = [{
        name      = "api"
        routes    = [{ hosts = ["a.*.b"], path = "api" }]
        upstreams = [
          { endpoint = { host = "127.0.0.1", port = "9000" } },
          { endpoint = { host = "127.0.0.1", port = 9001 }, weight = 0 },
        ]
      }]
    }
    """
    main = write(tmp_path, "main.hcl", text)
    assert problems(main) == [
        f"{main}:2: server.version: unsupported version 2; this snakeway reads version 1",
        f'{main}:5: ingress.web.bind.prot: unknown key "prot" (did you mean "port"?); allowed keys: interface, port, '
        "tls, redirect_http_to_https",
        f"{main}:5: ingress.web.bind.port: required key is missing",
        f'{main}:8: ingress.web.services[0].routes[0].hosts[0]: invalid host pattern "a.*.b": expected a host name '
        '(without port), "*.domain" (exactly one more label) or "*"',
        f'{main}:8: ingress.web.services[0].routes[0].path: must start with /, got "api"',
        f'{main}:10: ingress.web.services[0].upstreams[0].endpoint.port: expected an integer, got string "9000"',
        f"{main}:11: ingress.web.services[0].upstreams[1].weight: must be at least 1, got 0",
    ]
    with pytest.raises(SnakewayError):  # the CLI catches the family, not just ConfigError
        load_config(main)


def test_duplicate_service_names(tmp_path: Path) -> None:
    text = BASE + textwrap.dedent(
        """\
        ingress "other" {
          bind = { interface = "loopback", port = 8081 }
          services = [{
            name      = "api"
            routes    = [{ hosts = ["other.test"] }]
            upstreams = [{ endpoint = { host = "127.0.0.1", port = 9000 } }]
          }]
        }
        """
    )
    main = write(tmp_path, "main.hcl", text)
    assert problems(main) == [
        f'{main}:15: ingress.other.services[0].name: service name "api" is already used at '
        f"{main}:7 (ingress.web.services[0].name)"
    ]


def test_same_host_and_path_twice_on_one_listener(tmp_path: Path) -> None:
    # Hosts compare case-insensitively and "/api/" is "/api"; a second ingress
    # on the same interface and port shares the listener.
    (tmp_path / "www").mkdir()
    text = BASE + textwrap.dedent(
        """\
        ingress "more" {
          bind = { interface = "127.0.0.1", port = 8080 }
          services = [{
            name      = "api2"
            routes    = [{ hosts = ["other.test", "EXAMPLE.test"], path = "/api/" }]
            upstreams = [{ endpoint = { host = "127.0.0.1", port = 9000 } }]
          }]
          static_files = [{ routes = [{ hosts = ["other.test"], path = "/api", file_dir = "www" }] }]
        }
        """
    )
    main = write(tmp_path, "main.hcl", text)
    assert problems(main) == [
        f'{main}:16: ingress.more.services[0].routes[0].hosts[1]: host "example.test" with path "/api" is already '
        f"routed on 127.0.0.1:8080 at {main}:8 (ingress.web.services[0].routes[0].hosts[0])",
        f'{main}:19: ingress.more.static_files[0].routes[0].hosts[0]: host "other.test" with path "/api" is already '
        f"routed on 127.0.0.1:8080 at {main}:16 (ingress.more.services[0].routes[0].hosts[0])",
    ]


def test_two_spellings_of_one_route_path_are_the_same_route(tmp_path: Path) -> None:
    # "/%7Eapi/" is "/~api" as a request path is normalised: routed twice.
    text = BASE.replace('path = "/api"', 'path = "/~api"') + textwrap.dedent(
        """\
        ingress "more" {
          bind = { interface = "127.0.0.1", port = 8080 }
          services = [{
            name      = "api2"
            routes    = [{ hosts = ["example.test"], path = "/%7Eapi/" }]
            upstreams = [{ endpoint = { host = "127.0.0.1", port = 9000 } }]
          }]
        }
        """
    )
    main = write(tmp_path, "main.hcl", text)
    assert problems(main) == [
        f'{main}:16: ingress.more.services[0].routes[0].hosts[0]: host "example.test" with path "/~api" is already '
        f"routed on 127.0.0.1:8080 at {main}:8 (ingress.web.services[0].routes[0].hosts[0])",
    ]


def test_same_host_and_path_on_different_ports_is_fine(tmp_path: Path) -> None:
    text = BASE + BASE.split("}\n", 1)[1].replace('"web"', '"web2"').replace("8080", "8081").replace(
        '"api"', '"api2"'
    )
    main = write(tmp_path, "main.hcl", text)
    assert [i.bind.port for i in load_config(main).ingresses] == [8080, 8081]


def test_one_port_on_two_interfaces_is_an_error(tmp_path: Path) -> None:
    text = BASE + 'ingress "public" {\n  bind = { interface = "all", port = 8080 }\n}\n'
    main = write(tmp_path, "main.hcl", text)
    assert problems(main) == [
        f"{main}:13: ingress.public.bind.port: port 8080 is already bound to 127.0.0.1 at {main}:5 "
        "(ingress.web.bind.port); ingresses that share a port must use the same interface"
    ]


def test_includes_are_loaded_in_sorted_order_named_by_file_stem(tmp_path: Path) -> None:
    main = write(
        tmp_path,
        "main.hcl",
        SERVER + 'include {\n  ingresses = ["sites/*.hcl", "nothing/*.hcl", "extra.hcl"]\n}\n',
    )
    for name, port in [("sites/b.hcl", 82), ("sites/a.hcl", 81), ("extra.hcl", 83)]:
        write(tmp_path, name, f"bind = {{ port = {port} }}\n")
    (tmp_path / "sites" / "dir.hcl").mkdir()  # directories are not files
    loaded = load_config(main)
    assert [(i.name, i.bind.port, i.source) for i in loaded.ingresses] == [
        ("a", 81, tmp_path / "sites/a.hcl"),
        ("b", 82, tmp_path / "sites/b.hcl"),
        ("extra", 83, tmp_path / "extra.hcl"),
    ]


def test_each_file_is_read_once(tmp_path: Path) -> None:
    # "*.hcl" matches the entry file itself, and "site.hcl" is matched twice.
    main = write(tmp_path, "main.hcl", SERVER + 'include {\n  ingresses = ["*.hcl", "site.hcl"]\n}\n')
    write(tmp_path, "site.hcl", "bind = { port = 80 }\n")
    assert [i.name for i in load_config(main).ingresses] == ["site"]


def test_problems_in_included_files_name_that_file(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    main = write(tmp_path, "main.hcl", BASE + 'include {\n  ingresses = "ingress.d/*.hcl"\n}\n')
    bad = write(
        tmp_path,
        "ingress.d/bad.hcl",
        """\
        bind = { port = 8080, interface = "loopback" }

        services = [{
          name      = "api"
          routes    = [{ hosts = ["example.test"], path = "/api" }]
          upstreams = [{ endpoint = { host = "127.0.0.1", port = 70000 } }]
        }]
        static_files = [{ routes = [{ hosts = ["*"], file_dir = "../docs" }] }]
        server = {}
        """,
    )
    broken = write(tmp_path, "ingress.d/broken.hcl", "bind = {\n  port = 80\n")
    web = write(tmp_path, "ingress.d/web.hcl", "bind = { port = 8080 }\n")
    assert problems(main) == [
        f'{bad}:4: services[0].name: service name "api" is already used at {main}:7 (ingress.web.services[0].name)',
        f'{bad}:5: services[0].routes[0].hosts[0]: host "example.test" with path "/api" is already routed on '
        f"127.0.0.1:8080 at {main}:8 (ingress.web.services[0].routes[0].hosts[0])",
        f"{bad}:6: services[0].upstreams[0].endpoint.port: must be between 1 and 65535, got 70000",
        f'{bad}:9: server: unknown key "server" (did you mean "services"?); allowed keys: bind, services, '
        "static_files, bind_admin",
        f"{broken}:3: syntax error: unexpected end of file (unclosed brace, bracket or string?)",
        f'{web}:1: ingress name "web" is already used at {main}:4 (ingress.web)',
        f"{web}:1: bind.port: port 8080 is already bound to 127.0.0.1 at {main}:5 (ingress.web.bind.port); "
        "ingresses that share a port must use the same interface",
    ]


def test_include_shapes(tmp_path: Path) -> None:
    main = write(tmp_path, "main.hcl", SERVER + "include {\n  ingresses = 5\n  other = true\n}\n")
    assert problems(main) == [
        f"{main}:5: include.ingresses: expected a glob or a list of globs, got number 5",
        f'{main}:6: include.other: unknown key "other"; allowed keys: ingresses',
    ]


def test_syntax_error_in_entry_file(tmp_path: Path) -> None:
    main = write(tmp_path, "main.hcl", 'server {\n  version = 1\n  name = "unterminated\n}\n')
    (line,) = problems(main)
    assert line.startswith(f"{main}:")
    assert "syntax error" in line


def test_missing_entry_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.hcl"
    assert problems(missing) == [f"{missing}:1: cannot read file: No such file or directory"]


def test_hosts_are_normalised(tmp_path: Path) -> None:
    text = BASE.replace(
        '["example.test"]', '["Bücher.Example", "*.MÜNCHEN.test", "*", "xn--bcher-kva.other", "10.0.0.1", "[::1]"]'
    )
    (service,) = load_config(write(tmp_path, "main.hcl", text)).ingresses[0].services
    assert service.routes[0].hosts == (
        "xn--bcher-kva.example",
        "*.xn--mnchen-3ya.test",
        "*",
        "xn--bcher-kva.other",
        "10.0.0.1",
        "[::1]",
    )


@pytest.mark.parametrize(
    ("written", "normalised"),
    [("/", "/"), ("//", "/"), ("/api/", "/api"), ("/a/b/", "/a/b"), ("/a%20b", "/a%20b"), ("/%7euser", "/~user"),
     ("/caf\u00e9/", "/caf%C3%A9"), ("/a%2fb", "/a%2Fb"), ("/a/./b/../c/", "/a/c"), ("/%2E%2e", "/"),
     ("/a\\b", "/a\\b")],
)
def test_route_paths_take_the_form_request_paths_are_compared_in(tmp_path: Path, written: str, normalised: str) -> None:
    text = BASE.replace('path = "/api"', f"path = {quote(written)}")
    (service,) = load_config(write(tmp_path, "main.hcl", text)).ingresses[0].services
    assert service.routes[0].path == normalised


@pytest.mark.parametrize(
    ("written", "reason"),
    [("/a%zz", "malformed percent-escape in the path"), ("/a%00", "encoded NUL in the path"),
     ("/a%2Fb/../c", "an encoded slash before a '..' segment in the path"),
     ("/a/..\\b", "a dot-segment between backslashes in the path")],
)
def test_a_route_path_no_request_can_match_is_reported(tmp_path: Path, written: str, reason: str) -> None:
    main = write(tmp_path, "main.hcl", BASE.replace('path = "/api"', f"path = {quote(written)}"))
    assert problems(main) == [
        f"{main}:8: ingress.web.services[0].routes[0].path: no request path can match {quote(written)}: {reason}"
    ]


@pytest.mark.parametrize(
    ("interface", "address"),
    [("loopback", "127.0.0.1"), ("all", "0.0.0.0"), ("10.0.0.1", "10.0.0.1"), ("::1", "::1"), ("::", "::"),
     ("2001:DB8::0:1", "2001:db8::1")],
)
def test_interfaces(tmp_path: Path, interface: str, address: str) -> None:
    text = BASE.replace('interface = "loopback"', f"interface = {quote(interface)}")
    assert load_config(write(tmp_path, "main.hcl", text)).ingresses[0].bind.interface == address


@given(port=st.integers(min_value=1, max_value=65535))
def test_any_valid_port_round_trips(port: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        main = write(Path(directory), "main.hcl", BASE.replace("port = 8080", f"port = {port}"))
        assert load_config(main).ingresses[0].bind.port == port


@given(port=st.one_of(st.integers(max_value=0), st.integers(min_value=65536)))
def test_any_invalid_port_is_reported(port: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        main = write(Path(directory), "main.hcl", BASE.replace("port = 8080", f"port = {port}"))
        assert problems(main) == [f"{main}:5: ingress.web.bind.port: must be between 1 and 65535, got {port}"]


@given(name=st.text(min_size=1))
def test_any_service_name_round_trips_through_hcl_quoting(name: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        main = write(Path(directory), "main.hcl", BASE.replace('"api"', quote(name)))
        assert load_config(main).ingresses[0].services[0].name == name


@given(
    labels=st.lists(st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?", fullmatch=True), min_size=1,
                    max_size=4),
    wildcard=st.booleans(),
)
def test_valid_host_patterns_are_lower_cased(labels: list[str], wildcard: bool) -> None:
    assume(not (wildcard and hostnames.is_ip(".".join(labels))))  # "*.10.0.0.1": below
    host = ("*." if wildcard else "") + ".".join(labels)
    with tempfile.TemporaryDirectory() as directory:
        main = write(Path(directory), "main.hcl", BASE.replace('"example.test"', quote(host)))
        assert load_config(main).ingresses[0].services[0].routes[0].hosts == (host.lower(),)


def test_a_wildcard_over_an_ip_address_is_refused(tmp_path: Path) -> None:
    main = write(tmp_path, "main.hcl", BASE.replace('"example.test"', '"*.10.0.0.1"'))
    assert problems(main) == [
        f'{main}:{line_of(BASE, "example.test")}: ingress.web.services[0].routes[0].hosts[0]: invalid host pattern '
        '"*.10.0.0.1": expected a host name (without port), "*.domain" (exactly one more label) or "*"'
    ]


def test_via_is_on_by_default_and_can_be_switched_off(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "on.hcl", BASE)).server.via is True
    off = BASE.replace("  version = 1\n", "  version = 1\n  via = false\n")
    assert load_config(write(tmp_path, "off.hcl", off)).server.via is False
    wrong = write(tmp_path, "wrong.hcl", BASE.replace("  version = 1\n", '  version = 1\n  via = "no"\n'))
    assert problems(wrong) == [f'{wrong}:3: server.via: expected true or false, got string "no"']


@pytest.mark.parametrize("key", ["state_dir", "pid_file", "access_log"])
def test_nul_in_a_path_is_reported(tmp_path: Path, key: str) -> None:
    main = write(tmp_path, "main.hcl", f'server {{\n  version = 1\n  {key} = "a\\u0000b"\n}}\n')
    assert problems(main) == [f'{main}:3: server.{key}: a path must not contain a NUL character, got "a\\u0000b"']


def test_nul_in_a_static_file_dir_is_reported(tmp_path: Path) -> None:
    text = SERVER + 'ingress "s" {\n  bind = { port = 8080 }\n' \
        '  static_files = [{ routes = [{ hosts = ["*"], file_dir = "w\\u0000" }] }]\n}\n'
    main = write(tmp_path, "main.hcl", text)
    assert problems(main) == [f"{main}:{line_of(text, 'file_dir')}: ingress.s.static_files[0].routes[0].file_dir: "
                              'a path must not contain a NUL character, got "w\\u0000"']
