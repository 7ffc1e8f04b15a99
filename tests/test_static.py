"""plan_static: synchronous tests on real files under tmp_path."""

from __future__ import annotations

import email.utils
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snakeway.config.model import Route, StaticSite
from snakeway.proxy.static import (
    ErrorReply,
    Listing,
    NotModified,
    Redirect,
    Reply,
    SendFile,
    plan_static,
    split_target,
)

MTIME = 1_700_000_000  # 2023-11-14T22:13:20Z
BODY = b"0123456789" * 10  # 100 bytes


def make_tree(base: Path) -> Path:
    """base/www is the site; base/secret.txt and base/outside/ lie outside it."""
    root = base / "www"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "plain").mkdir()
    (root / "empty.txt").write_bytes(b"")
    (root / "a.txt").write_bytes(BODY)
    (root / "style.css").write_bytes(b"body{}")
    (root / "blob.bin").write_bytes(b"\x00\x01")
    (root / "noext").write_bytes(b"?")
    (root / "index.html").write_bytes(b"<h1>home</h1>")
    (root / "sub" / "index.html").write_bytes(b"<h1>sub</h1>")
    (root / "sub" / "deeper" / "x.js").write_bytes(b"1")
    (root / "plain" / "b <&>.txt").write_bytes(b"b")
    (root / "plain" / ".hidden").write_bytes(b"h")
    (root / "plain" / "dir").mkdir()
    (root / ".well-known").mkdir()
    (root / ".well-known" / "t").write_bytes(b"token")
    (base / "secret.txt").write_bytes(b"secret")
    (base / "outside").mkdir()
    (base / "outside" / "f.txt").write_bytes(b"out")
    os.symlink(base / "secret.txt", root / "leak.txt")
    os.symlink(base / "outside", root / "leakdir")
    os.symlink(base / "outside", root / "plain" / "leaklink")
    os.symlink(root / "a.txt", root / "alias.txt")
    os.mkfifo(root / "fifo")
    os.utime(root / "a.txt", (MTIME, MTIME))
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_tree(tmp_path)


def site(root: Path, prefix: str = "/", **kwargs: object) -> StaticSite:
    return StaticSite(route=Route(hosts=("*",), path=prefix), file_dir=root, **kwargs)  # type: ignore[arg-type]


def plan(root: Path, path: str, *headers: tuple[bytes, bytes], method: bytes = b"GET", **kwargs: object):  # noqa: ANN201
    prefix = kwargs.pop("prefix", "/")
    query = kwargs.pop("query", "")
    clock = {"now": kwargs.pop("now")} if "now" in kwargs else {}
    static = site(root, prefix, **kwargs)
    return plan_static(static, method, path, list(headers), query=query, **clock)  # type: ignore[arg-type]


def hdr(p: SendFile | Reply, name: bytes) -> bytes | None:
    return dict(p.headers).get(name)


# -- mapping URLs to files ----------------------------------------------------------------


def test_serves_file_with_headers(root: Path) -> None:
    p = plan(root, "/a.txt")
    assert isinstance(p, SendFile)
    assert (p.path, p.status, p.start, p.length) == (str(root / "a.txt"), 200, 0, 100)
    h = dict(p.headers)
    assert h[b"content-type"] == b"text/plain; charset=utf-8"
    assert h[b"content-length"] == b"100"
    assert h[b"accept-ranges"] == b"bytes"
    assert h[b"last-modified"] == b"Tue, 14 Nov 2023 22:13:20 GMT"
    assert h[b"etag"].startswith(b'"') and h[b"etag"].endswith(b'"')
    assert len(p.headers) == len(h)  # no duplicates


@pytest.mark.parametrize(
    ("name", "ctype"),
    [
        ("style.css", b"text/css; charset=utf-8"),
        ("index.html", b"text/html; charset=utf-8"),
        ("blob.bin", b"application/octet-stream"),
        ("noext", b"application/octet-stream"),
        ("sub/deeper/x.js", b"text/javascript; charset=utf-8"),
    ],
)
def test_content_type(root: Path, name: str, ctype: bytes) -> None:
    p = plan(root, "/" + name)
    assert isinstance(p, SendFile)
    assert hdr(p, b"content-type") == ctype


def test_etag_changes_with_content(root: Path) -> None:
    before = hdr(plan(root, "/a.txt"), b"etag")
    (root / "a.txt").write_bytes(BODY + b"!")
    assert hdr(plan(root, "/a.txt"), b"etag") != before


def test_route_prefix_is_stripped(root: Path) -> None:
    p = plan(root, "/static/sub/deeper/x.js", prefix="/static")
    assert isinstance(p, SendFile) and p.path == str(root / "sub/deeper/x.js")
    assert plan(root, "/staticx/a.txt", prefix="/static").status == 404
    assert plan(root, "/other/a.txt", prefix="/static").status == 404


def test_route_root_without_slash_redirects(root: Path) -> None:
    p = plan(root, "/static", prefix="/static", query="v=1")
    assert isinstance(p, Redirect)
    assert (p.status, p.location) == (301, b"/static/?v=1")
    p = plan(root, "/static/", prefix="/static")
    assert isinstance(p, SendFile) and p.path == str(root / "index.html")


def test_percent_encoded_names(root: Path) -> None:
    p = plan(root, "/plain/b%20%3C%26%3E.txt")
    assert isinstance(p, SendFile) and p.path == str(root / "plain" / "b <&>.txt")


def test_merges_slashes(root: Path) -> None:
    p = plan(root, "//sub//deeper/x.js")
    assert isinstance(p, SendFile) and p.path == str(root / "sub/deeper/x.js")


def test_missing_is_404(root: Path) -> None:
    p = plan(root, "/nope.txt")
    assert isinstance(p, ErrorReply)
    assert (p.status, p.body) == (404, b"404 Not Found\n")
    assert hdr(p, b"content-length") == b"14"


def test_trailing_slash_on_file_is_404(root: Path) -> None:
    assert plan(root, "/a.txt/").status == 404


def test_fifo_is_404(root: Path) -> None:
    assert plan(root, "/fifo").status == 404


def test_symlink_inside_is_followed(root: Path) -> None:
    p = plan(root, "/alias.txt")
    assert isinstance(p, SendFile) and p.path == str(root / "a.txt")


def test_hidden_files_are_served(root: Path) -> None:
    assert isinstance(plan(root, "/.well-known/t"), SendFile)


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"OPTIONS", b"get"])
def test_other_methods_are_405(root: Path, method: bytes) -> None:
    p = plan(root, "/a.txt", method=method)
    assert isinstance(p, ErrorReply)
    assert p.status == 405 and hdr(p, b"allow") == b"GET, HEAD"


def test_head_plans_like_get(root: Path) -> None:
    assert plan(root, "/a.txt", method=b"HEAD") == plan(root, "/a.txt")


# -- traversal -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/../etc/passwd", 404),
        ("/../secret.txt", 404),
        ("/%2e%2e/secret.txt", 404),
        ("/%2E%2e/secret.txt", 404),
        ("/.%2e/secret.txt", 404),
        ("/a/%2e%2e/%2e%2e/x", 404),
        ("/sub/../../secret.txt", 404),
        ("/sub/./index.html", 404),
        ("/%2e%2e%2fsecret.txt", 404),
        ("/sub%2f..%2f..%2fsecret.txt", 404),
        ("/..%5csecret.txt", 404),
        ("/sub\\..\\..\\secret.txt", 404),
        ("/a.txt%00.png", 404),  # no file name has a NUL
        ("/a.txt\x00", 400),
        ("/caf\u00e9", 400),
        ("/a b", 400),
        ("relative", 400),
        ("", 400),
        ("/leak.txt", 404),
        ("/leakdir/f.txt", 404),
        ("/leakdir/", 404),
    ],
)
def test_traversal_is_refused(root: Path, path: str, status: int) -> None:
    p = plan(root, path, directory_listing=True)
    assert isinstance(p, ErrorReply)
    assert p.status == status


def test_traversal_under_prefix(root: Path) -> None:
    assert plan(root, "/static/../secret.txt", prefix="/static").status == 404
    assert plan(root, "/static/%2e%2e/secret.txt", prefix="/static").status == 404


def test_non_utf8_names_are_reachable(root: Path) -> None:
    name = os.fsdecode(b"\xff.bin")
    (root / name).write_bytes(b"x")
    p = plan(root, "/%FF.bin")
    assert isinstance(p, SendFile) and p.path == os.path.join(root, name)


# -- directories ----------------------------------------------------------------------------


def test_directory_serves_index(root: Path) -> None:
    p = plan(root, "/sub/")
    assert isinstance(p, SendFile) and p.path == str(root / "sub" / "index.html")
    assert hdr(p, b"content-type") == b"text/html; charset=utf-8"


def test_directory_without_slash_redirects(root: Path) -> None:
    p = plan(root, "/sub", query="a=1&b=2")
    assert isinstance(p, Redirect)
    assert (p.status, p.location) == (301, b"/sub/?a=1&b=2")
    assert hdr(p, b"content-length") == b"%d" % len(p.body)


def test_redirect_is_never_protocol_relative(root: Path) -> None:
    p = plan(root, "//sub")
    assert isinstance(p, Redirect) and p.location == b"/sub/"


def test_directory_without_index_is_403(root: Path) -> None:
    assert plan(root, "/plain/").status == 403
    assert plan(root, "/sub/", index=None).status == 403


def test_index_can_be_renamed(root: Path) -> None:
    (root / "plain" / "default.htm").write_bytes(b"d")
    p = plan(root, "/plain/", index="default.htm")
    assert isinstance(p, SendFile) and p.path.endswith("default.htm")


def test_index_symlinked_outside_is_not_served(root: Path) -> None:
    os.symlink(root.parent / "secret.txt", root / "plain" / "index.html")
    assert plan(root, "/plain/").status == 403


def test_listing(root: Path) -> None:
    p = plan(root, "/plain/", directory_listing=True)
    assert isinstance(p, Listing)
    assert p.status == 200
    assert hdr(p, b"content-type") == b"text/html; charset=utf-8"
    assert hdr(p, b"content-length") == b"%d" % len(p.body)
    body = p.body.decode()
    assert '<a href="b%20%3C%26%3E.txt">b &lt;&amp;&gt;.txt</a>' in body
    assert '<a href="dir/">dir/</a>' in body
    assert '<a href="../">../</a>' in body
    assert ".hidden" not in body
    assert "leaklink" not in body  # points outside file_dir
    assert body.index("dir/") < body.index("b%20")  # directories first


def test_listing_escapes_and_encodes_hostile_names(root: Path) -> None:
    (root / "plain" / '"><script>x').write_bytes(b"")
    (root / "plain" / "javascript:alert(1)").write_bytes(b"")
    body = plan(root, "/plain/", directory_listing=True).body.decode()  # type: ignore[union-attr]
    assert "<script>" not in body
    assert 'href="%22%3E%3Cscript%3Ex"' in body
    assert 'href="javascript%3Aalert%281%29"' in body


def test_listing_at_route_root_has_no_parent_link(root: Path) -> None:
    p = plan(root, "/files/", prefix="/files", index=None, directory_listing=True)
    assert isinstance(p, Listing)
    assert "../" not in p.body.decode()
    assert "Index of /files/" in p.body.decode()


def test_index_wins_over_listing(root: Path) -> None:
    assert isinstance(plan(root, "/sub/", directory_listing=True), SendFile)


# -- conditional requests ----------------------------------------------------------------


@pytest.fixture
def etag(root: Path) -> bytes:
    value = hdr(plan(root, "/a.txt"), b"etag")
    assert value is not None
    return value


def http_date(ts: float) -> bytes:
    return email.utils.formatdate(ts, usegmt=True).encode()


@pytest.mark.parametrize(
    "inm",
    ["{e}", "W/{e}", '"other", {e}', '"x",W/{e}', "*", ' "a" , {e} '],
)
def test_if_none_match_hits(root: Path, etag: bytes, inm: str) -> None:
    p = plan(root, "/a.txt", (b"if-none-match", inm.format(e=etag.decode()).encode()))
    assert isinstance(p, NotModified)
    assert p.status == 304 and p.body == b""
    assert hdr(p, b"etag") == etag and hdr(p, b"last-modified") is not None
    assert hdr(p, b"content-length") is None


def test_if_none_match_miss_wins_over_if_modified_since(root: Path) -> None:
    p = plan(root, "/a.txt", (b"if-none-match", b'"nope"'), (b"if-modified-since", http_date(MTIME + 10)))
    assert isinstance(p, SendFile) and p.status == 200


def test_if_none_match_repeated_fields_are_joined(root: Path, etag: bytes) -> None:
    p = plan(root, "/a.txt", (b"If-None-Match", b'"x"'), (b"if-none-match", etag))
    assert isinstance(p, NotModified)


@pytest.mark.parametrize(("delta", "expect_304"), [(0, True), (60, True), (-1, False)])
def test_if_modified_since(root: Path, delta: int, expect_304: bool) -> None:
    p = plan(root, "/a.txt", (b"if-modified-since", http_date(MTIME + delta)))
    assert isinstance(p, NotModified) is expect_304


@pytest.mark.parametrize(
    "value", [b"Fri, 31 Dec 9999 23:59:59 GMT", http_date(MTIME + 3600), http_date(MTIME + 1)]
)
def test_if_modified_since_in_the_future_is_ignored(root: Path, value: bytes) -> None:
    """A date later than the server's clock is not valid (RFC 9110 §13.1.3): the whole file, not 304."""
    now = MTIME + 0.5
    p = plan(root, "/a.txt", (b"if-modified-since", value), now=now)
    assert isinstance(p, SendFile) and p.status == 200


def test_if_modified_since_year_9999_on_the_real_clock(root: Path) -> None:
    p = plan(root, "/a.txt", (b"if-modified-since", b"Fri, 31 Dec 9999 23:59:59 GMT"))
    assert isinstance(p, SendFile) and p.status == 200


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ims=st.integers(MTIME - 10**6, 253402300799), now=st.integers(MTIME, MTIME + 10**7))
def test_if_modified_since_property(root: Path, ims: int, now: int) -> None:
    """304 exactly when the file is not newer than the date and the date is not in the server's future."""
    p = plan(root, "/a.txt", (b"if-modified-since", http_date(ims)), now=now)
    assert isinstance(p, NotModified) is (MTIME <= ims <= now)


@pytest.mark.parametrize(
    "value",
    [b"garbage", b"", b"\xff\xfe", b"Mon, 99 Foo 2023 99:99:99 GMT", b"Tue, 40 Nov 2023 22:13:20 GMT",
     b"Tue, 14 Nov 2023 63:13:20 GMT", b"Tue, 31 Feb 2024 00:00:00 GMT", b"Tue, 14 Nov 2023 22:13:61 GMT"],
)
def test_bad_if_modified_since_is_ignored(root: Path, value: bytes) -> None:
    assert plan(root, "/a.txt", (b"if-modified-since", value)).status == 200


@pytest.mark.parametrize("value", [b"Tue, 40 Nov 2023 22:13:20 GMT", b"Tue, 14 Nov 2023 22:13:20 +9999"])
def test_if_unmodified_since_that_is_not_a_date_is_ignored(root: Path, value: bytes) -> None:
    assert plan(root, "/a.txt", (b"if-unmodified-since", value)).status == 200


@pytest.mark.parametrize(
    "value", [b"Tuesday, 14-Nov-23 22:13:20 GMT", b"Tue Nov 14 22:13:20 2023", b"Tue, 14 Nov 2023 22:13:20 GMT"]
)
def test_the_three_http_date_formats(root: Path, value: bytes) -> None:
    """RFC 9110 §5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime formats, all name MTIME."""
    assert isinstance(plan(root, "/a.txt", (b"if-modified-since", value)), NotModified)


def test_head_gets_304_too(root: Path, etag: bytes) -> None:
    assert isinstance(plan(root, "/a.txt", (b"if-none-match", etag), method=b"HEAD"), NotModified)


def test_index_file_honours_conditionals(root: Path) -> None:
    tag = hdr(plan(root, "/sub/"), b"etag")
    assert tag is not None
    assert isinstance(plan(root, "/sub/", (b"if-none-match", tag)), NotModified)


def test_if_match(root: Path, etag: bytes) -> None:
    assert plan(root, "/a.txt", (b"if-match", etag)).status == 200
    assert plan(root, "/a.txt", (b"if-match", b"*")).status == 200
    assert plan(root, "/a.txt", (b"if-match", b'"nope"')).status == 412
    assert plan(root, "/a.txt", (b"if-match", b"W/" + etag)).status == 412  # strong comparison


def test_if_unmodified_since(root: Path) -> None:
    assert plan(root, "/a.txt", (b"if-unmodified-since", http_date(MTIME))).status == 200
    assert plan(root, "/a.txt", (b"if-unmodified-since", http_date(MTIME - 1))).status == 412


# -- ranges ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "start", "length"),
    [
        (b"bytes=0-9", 0, 10),
        (b"bytes=10-19", 10, 10),
        (b"bytes=90-", 90, 10),
        (b"bytes=0-", 0, 100),
        (b"bytes=-10", 90, 10),
        (b"bytes=-1000", 0, 100),
        (b"bytes=95-1000", 95, 5),
        (b"bytes=99-99", 99, 1),
        (b"bytes=0-99999999999999999999999999999", 0, 100),
        (b"BYTES = 5 - 6", 5, 2),
    ],
)
def test_single_range(root: Path, spec: bytes, start: int, length: int) -> None:
    p = plan(root, "/a.txt", (b"range", spec))
    assert isinstance(p, SendFile)
    assert (p.status, p.start, p.length) == (206, start, length)
    assert hdr(p, b"content-range") == b"bytes %d-%d/100" % (start, start + length - 1)
    assert hdr(p, b"content-length") == b"%d" % length


@pytest.mark.parametrize("spec", [b"bytes=100-", b"bytes=100-200", b"bytes=-0", b"bytes=1" + b"0" * 30 + b"-"])
def test_unsatisfiable_range(root: Path, spec: bytes) -> None:
    p = plan(root, "/a.txt", (b"range", spec))
    assert isinstance(p, ErrorReply)
    assert p.status == 416
    assert hdr(p, b"content-range") == b"bytes */100"


@pytest.mark.parametrize(
    "spec",
    [b"bytes=0-1,5-6", b"bytes=0-1, 5-6", b"bytes=5-1", b"bytes=-", b"bytes=a-b", b"items=0-1", b"0-1", b"bytes=0-1,"],
)
def test_ignored_range_sends_whole_file(root: Path, spec: bytes) -> None:
    p = plan(root, "/a.txt", (b"range", spec))
    assert isinstance(p, SendFile)
    assert (p.status, p.start, p.length) == (200, 0, 100)
    assert hdr(p, b"content-range") is None


def test_range_on_empty_file(root: Path) -> None:
    assert plan(root, "/empty.txt", (b"range", b"bytes=0-")).status == 416
    p = plan(root, "/empty.txt", (b"range", b"bytes=-5"))
    assert isinstance(p, SendFile) and (p.status, p.length) == (200, 0)


def test_range_is_ignored_for_head(root: Path) -> None:
    p = plan(root, "/a.txt", (b"range", b"bytes=0-9"), method=b"HEAD")
    assert isinstance(p, SendFile) and p.status == 200


def test_if_range(root: Path, etag: bytes) -> None:
    rng = (b"range", b"bytes=0-9")
    assert plan(root, "/a.txt", rng, (b"if-range", etag)).status == 206
    assert plan(root, "/a.txt", rng, (b"if-range", b'"stale"')).status == 200
    assert plan(root, "/a.txt", rng, (b"if-range", b"W/" + etag)).status == 200
    assert plan(root, "/a.txt", rng, (b"if-range", http_date(MTIME))).status == 206
    assert plan(root, "/a.txt", rng, (b"if-range", http_date(MTIME - 5))).status == 200
    assert plan(root, "/a.txt", rng, (b"if-range", b"junk")).status == 200
    # A failed If-Range also disarms a 416.
    assert plan(root, "/a.txt", (b"range", b"bytes=500-"), (b"if-range", b'"stale"')).status == 200


# -- split_target -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"/a/b?x=1&y", "/a/b", "x=1&y"),
        (b"/a", "/a", ""),
        (b"/caf\xc3\xa9", "/caf\xc3\xa9", ""),
    ],
)
def test_split_target(target: bytes, path: str, query: str) -> None:
    assert split_target(target) == (path, query)


# -- properties -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("prop"))


SEGMENTS = st.sampled_from(
    ["..", ".", "%2e%2e", "%2E.", ".%2e", "%2f", "%5c", "%00", "%", "%2", "", "a.txt", "sub", "leak.txt",
     "leakdir", "f.txt", "secret.txt", "outside", "alias.txt", "index.html", "\\", "%252e%252e", "~"]
)  # fmt: skip
PATHS = st.one_of(
    st.text(),
    st.lists(SEGMENTS, max_size=8).map(lambda segs: "/" + "/".join(segs)),
    st.lists(SEGMENTS, max_size=8).map(lambda segs: "/static/" + "/".join(segs)),
)


def assert_contained(root: Path, p: object) -> None:
    real_root = os.path.realpath(root)
    if isinstance(p, SendFile):
        assert os.path.commonpath([real_root, os.path.realpath(p.path)]) == real_root
        assert os.path.realpath(p.path) == p.path
        with open(p.path, "rb") as f:
            assert f.read() != b"secret"


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=500)
@given(path=PATHS, prefix=st.sampled_from(["/", "/static"]), listing=st.booleans(), query=st.text(max_size=8))
def test_never_escapes_file_dir(tree: Path, path: str, prefix: str, listing: bool, query: str) -> None:
    p = plan_static(site(tree, prefix, directory_listing=listing), b"GET", path, [], query=query)
    assert p.status in {200, 206, 301, 400, 403, 404}
    assert_contained(tree, p)
    if isinstance(p, Listing):
        assert b"secret" not in p.body and b"f.txt" not in p.body
    for _name, value in p.headers:
        assert b"\r" not in value and b"\n" not in value and b"\x00" not in value


HEADER_NAMES = st.sampled_from(
    [b"range", b"if-range", b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since"]
)
HEADER_VALUES = st.one_of(
    st.binary(max_size=40),
    st.from_regex(rb"\Abytes=\d{0,3}-\d{0,3}(,\d{0,3}-\d{0,3})?\Z"),
    st.sampled_from([b"*", b'"x"', b'W/"x"', b"Tue, 14 Nov 2023 22:13:20 GMT"]),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=500)
@given(headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=4), name=st.sampled_from(["a.txt", "empty.txt"]))
def test_any_conditional_headers_give_a_coherent_plan(tree: Path, headers: list[tuple[bytes, bytes]], name: str) -> None:
    size = (tree / name).stat().st_size
    p = plan_static(site(tree), b"GET", "/" + name, headers)
    assert p.status in {200, 206, 304, 412, 416}
    if isinstance(p, SendFile):
        assert 0 <= p.start and p.start + p.length <= size
        assert dict(p.headers)[b"content-length"] == b"%d" % p.length
        assert p.status == 206 or (p.start, p.length) == (0, size)
        assert p.status == 200 or p.length >= 1


def test_redirect_drops_a_query_that_is_not_header_safe(root: Path) -> None:
    p = plan(root, "/sub", query="x=\r\nSet-Cookie: a")
    assert isinstance(p, Redirect) and p.location == b"/sub/"
