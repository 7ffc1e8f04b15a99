from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from snakeway.config.model import Route
from snakeway.hostnames import route_host
from snakeway.proxy.routing import HOST_CACHE_SIZE, Router
from snakeway.uri import normalize_path


def route(path: str, *hosts: str) -> Route:
    return Route(hosts=hosts or ("*",), path=path)


def test_path_prefix_on_segment_boundary() -> None:
    router = Router([(route("/api"), "api")])
    assert router.match("a.test", "/api") is not None
    assert router.match("a.test", "/api/x") is not None
    assert router.match("a.test", "/apikeys") is None
    assert router.match("a.test", "/") is None


def test_longest_path_wins_over_config_order() -> None:
    router = Router([(route("/"), "root"), (route("/api"), "api"), (route("/api/v2"), "v2")])
    assert router.match("h", "/api/v2/users").target == "v2"
    assert router.match("h", "/api/v1").target == "api"
    assert router.match("h", "/other").target == "root"


def test_exact_host_beats_wildcard_beats_any() -> None:
    router = Router(
        [(route("/", "*"), "any"), (route("/", "*.example.test"), "wild"), (route("/", "www.example.test"), "exact")]
    )
    assert router.match("www.example.test", "/").target == "exact"
    assert router.match("api.example.test", "/").target == "wild"
    assert router.match("example.test", "/").target == "any"
    assert router.match("a.b.example.test", "/").target == "any"


def test_wildcard_is_exactly_one_label() -> None:
    router = Router([(route("/", "*.example.test"), "wild")])
    assert router.match("a.example.test", "/") is not None
    assert router.match("example.test", "/") is None
    assert router.match("a.b.example.test", "/") is None
    assert router.match(".example.test", "/") is None


def test_host_is_case_insensitive_and_port_stripped() -> None:
    router = Router([(route("/", "example.test"), "x")])
    assert router.match("EXAMPLE.test:8080", "/") is not None
    assert router.match("example.test.", "/") is not None
    assert route_host("[::1]:8080") == "[::1]"


def test_dot_segments_cannot_escape_a_route() -> None:
    router = Router([(route("/public"), "public"), (route("/admin", "admin.test"), "admin")])
    for target in (b"/public/../admin", b"/public/%2e%2e/admin", b"/.%2e/admin", b"/public/..%2fadmin"):
        assert router.match("x.test", normalize_path(target).decode()) is None, target
    assert router.match("x.test", normalize_path(b"/admin/../public/%2e/x").decode()).target == "public"


paths = st.lists(st.sampled_from(["a", "b", "api", "v1", "x"]), max_size=4).map(lambda p: "/" + "/".join(p))


@given(prefixes=st.lists(paths, min_size=1, max_size=6, unique=True), request_path=paths)
def test_longest_matching_prefix_always_wins(prefixes: list[str], request_path: str) -> None:
    router = Router([(route(p), p) for p in prefixes])
    found = router.match("h.test", request_path)
    matching = [
        p for p in prefixes if p == "/" or request_path == p or request_path.startswith(p + "/")
    ]
    if not matching:
        assert found is None
    else:
        assert found is not None
        assert found.target == max(matching, key=len)


@given(host=st.text(max_size=40), path=st.text(max_size=40))
def test_match_is_total(host: str, path: str) -> None:
    router = Router([(route("/a", "*.b.test"), 1), (route("/", "*"), 2)])
    assert router.match(host, path) is not None


hosts = st.sampled_from(["a.test", "A.test:8080", "x.a.test", "b.test", "[::1]:80", "", "a.test."])


@given(requests=st.lists(st.tuples(hosts, paths), max_size=12))
def test_remembered_hosts_route_as_the_first_time(requests: list[tuple[str, str]]) -> None:
    table = [
        (route("/api", "a.test"), 1),
        (route("/api", "*.a.test"), 2),
        (route("/", "b.test", "a.test"), 3),
        (route("/v1", "*"), 4),
    ]
    remembering = Router(table)
    for host, path in requests:
        assert remembering.match(host, path) == Router(table).match(host, path)


def test_host_memo_is_bounded() -> None:
    router = Router([(route("/", "*"), 1)])
    for i in range(3 * HOST_CACHE_SIZE):  # a client making up a Host per request
        assert router.match(f"h{i}.test", "/") is not None
    assert len(router._host_cache) <= HOST_CACHE_SIZE
