"""The status page (``GET /`` on the admin listener) and its login form, as HTML. Pure: data in, a string out.

The page is one document with inline CSS and no script, no image and no external asset, so that it works
on a machine without network access and under a strict ``Content-Security-Policy``. It shows the data of
``GET /admin/certs`` and ``GET /admin/upstreams``: every certificate as a row whose bar spans its lifetime
(``not_before`` to ``not_after``) with a mark for now and one for the renewal moment; every upstream
endpoint with its health; and the recent errors, which are the certificates' last renewal errors and the
upstream endpoints cooling down after failures, then the last warnings and errors of every worker's log
(:mod:`snakeway.admin.errorlog`). Every value is escaped with :func:`html.escape`: a certificate
name, a file name or an error message is never markup.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #ddd;
vertical-align:top}th{background:#eee}
.bar{position:relative;height:14px;min-width:220px;background:#d8ecd8;border:1px solid #9c9;border-radius:3px}
.bar .late{position:absolute;top:0;bottom:0;right:0;background:#f3e2b8}
.bar .mark{position:absolute;top:-3px;bottom:-3px;width:2px}
.bar .now{background:#1a4fb0}.bar .renew{background:#c77700}
.legend{font-size:.85em;color:#555}
.ok{color:#1b7a1b;font-weight:600}.down{color:#b00020;font-weight:600}.warn{color:#b06000;font-weight:600}
form{margin-top:1em}input[type=password]{width:28em;padding:.3em}
.error{color:#b00020}
"""

_WAITING_STATES = frozenset({"due", "not yet valid"})


def _doc(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n")


def login_form(error: str | None = None) -> str:
    """The page a browser without a valid session gets (with ``401``): a form that posts a bearer token."""
    message = f'<p class="error" id="login-error">{escape(error)}</p>' if error else ""
    return _doc("snakeway: log in", (
        "<h1>snakeway status</h1>"
        "<p>Log in with one of the admin listener's bearer tokens (a line of its token file).</p>"
        f'{message}<form method="post" action="/login">'
        '<label>Token <input type="password" name="token" id="token" autocomplete="current-password" required>'
        '</label> <button type="submit" id="login">Log in</button></form>'))


def redirect_to_status() -> str:
    """The body of the redirect after a login (a browser follows the ``Location`` without showing it)."""
    return _doc("snakeway: logged in", '<p>Logged in: <a href="/">the status page</a>.</p>')


def _parse(moment: str | None) -> datetime | None:
    return datetime.fromisoformat(moment) if moment else None


def _fraction(moment: datetime, start: datetime, end: datetime) -> float:
    span = (end - start).total_seconds()
    if span <= 0:
        return 100.0
    return round(min(max((moment - start).total_seconds() / span, 0.0), 1.0) * 100, 2)


def lifetime_bar(cert: dict[str, Any], now: datetime) -> str:
    """The bar of one certificate: its lifetime, now, the renewal moment; empty when it has no certificate."""
    start, end = _parse(cert.get("not_before")), _parse(cert.get("not_after"))
    if start is None or end is None:
        return '<span class="legend">no certificate yet</span>'
    renewal = _parse(cert.get("renewal_at"))
    parts = []
    title = f"valid {start.isoformat()} to {end.isoformat()}"
    if renewal is not None:
        late = 100 - _fraction(renewal, start, end)
        parts.append(f'<div class="late" style="width:{late}%"></div>')
        parts.append(f'<div class="mark renew" style="left:{_fraction(renewal, start, end)}%"></div>')
        title += f"; renewal from {renewal.isoformat()}"
    parts.append(f'<div class="mark now" style="left:{_fraction(now, start, end)}%"></div>')
    return (f'<div class="bar" role="img" title="{escape(title)}" aria-label="{escape(title)}">{"".join(parts)}</div>'
            f'<div class="legend">{escape(start.date().isoformat())} &rarr; {escape(end.date().isoformat())}'
            f"{' · renew ' + escape(renewal.isoformat(timespec='minutes')) if renewal else ''}</div>")


def _state(state: str) -> str:
    css = "ok" if state == "valid" else ("warn" if state in _WAITING_STATES else "down")
    return f'<span class="{css}">{escape(state)}</span>'


def _cert_rows(certs: list[dict[str, Any]], now: datetime) -> str:
    if not certs:
        return "<p>No certificate.</p>"
    rows = []
    for cert in certs:
        names = ", ".join(str(n) for n in cert.get("names") or [])
        next_attempt = cert.get("next_attempt") or cert.get("next_check") or "—"
        rows.append(
            f'<tr class="cert"><td><b>{escape(str(cert.get("id")))}</b><br>{escape(names)}</td>'
            f'<td>{escape(str(cert.get("kind", "")))}</td><td>{_state(str(cert.get("state", "")))}</td>'
            f"<td>{lifetime_bar(cert, now)}</td><td>{escape(str(next_attempt))}</td></tr>")
    return ("<table id=certificates><tr><th>Certificate</th><th>Kind</th><th>State</th>"
            "<th>Lifetime (blue: now, orange: renewal)</th><th>Next attempt</th></tr>" + "".join(rows) + "</table>")


def _upstream_rows(services: dict[str, list[dict[str, Any]]]) -> str:
    rows = []
    for service, endpoints in services.items():
        for e in endpoints:
            health = ('<span class="ok">healthy</span>' if e.get("healthy") else
                      f'<span class="down">down</span> for {escape(str(e.get("down_for_seconds")))} s')
            rows.append(f'<tr class="upstream"><td>{escape(service)}</td><td>{escape(str(e.get("endpoint")))}</td>'
                        f'<td>{health}</td><td>{escape(str(e.get("failures", 0)))}</td>'
                        f'<td>{escape(str(e.get("in_flight", 0)))}</td></tr>')
    if not rows:
        return "<p>No upstream.</p>"
    return ("<table id=upstreams><tr><th>Service</th><th>Endpoint</th><th>Health</th><th>Failures</th>"
            "<th>In flight</th></tr>" + "".join(rows) + "</table>")


def recent_errors(certs: list[dict[str, Any]], services: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str]]:
    """(what, error) for every certificate whose last renewal failed and every upstream endpoint down."""
    errors = [(f"certificate {c.get('id')}", str(c["last_error"])) for c in certs if c.get("last_error")]
    for service, endpoints in services.items():
        for e in endpoints:
            if not e.get("healthy"):
                errors.append((f"upstream {e.get('endpoint')} of {service}",
                               f"{e.get('failures', 0)} failed connection(s); cooling down for "
                               f"{e.get('down_for_seconds')} s"))
    return errors


def _log_rows(log: list[dict[str, Any]]) -> str:
    if not log:
        return "<p id=log>No warning or error in the log of any worker.</p>"
    rows = []
    for record in reversed(log):  # newest first
        try:
            at = datetime.fromtimestamp(float(record.get("at") or 0), UTC).isoformat(timespec="seconds")
        except (TypeError, ValueError, OverflowError, OSError):
            at = "?"
        level = str(record.get("level", ""))
        rows.append(f'<tr class="log"><td>{escape(at)}</td><td class="{"down" if level != "warning" else "warn"}">'
                    f'{escape(level)}</td><td>{escape(str(record.get("pid")))}</td>'
                    f'<td>{escape(str(record.get("logger")))}</td><td>{escape(str(record.get("message")))}</td></tr>')
    return ("<table id=log><tr><th>Time (UTC)</th><th>Level</th><th>Process</th><th>Logger</th><th>Message</th></tr>"
            + "".join(rows) + "</table>")


def render(certs: list[dict[str, Any]], services: dict[str, list[dict[str, Any]]], *, workers: int,
           now: datetime, log: list[dict[str, Any]] | None = None) -> str:
    """The status page: ``certs`` as ``GET /admin/certs`` lists them, ``services`` as ``GET /admin/upstreams``,
    ``log`` the recent warnings and errors of the log (:func:`snakeway.admin.errorlog.merged`)."""
    errors = recent_errors(certs, services)
    error_list = ("<ul id=errors>" + "".join(f"<li><b>{escape(what)}</b>: {escape(why)}</li>" for what, why in errors)
                  + "</ul>") if errors else "<p id=errors>No certificate or upstream failing now.</p>"
    return _doc("snakeway status", (
        f"<h1>snakeway status</h1><p class=legend>{escape(now.isoformat(timespec='seconds'))} · "
        f"{escape(str(workers))} worker(s) · the same data as <code>/admin/certs</code> and "
        f"<code>/admin/upstreams</code></p>"
        f"<h2>Certificates</h2>{_cert_rows(certs, now)}"
        f"<h2>Upstreams</h2>{_upstream_rows(services)}"
        f"<h2>Recent errors</h2>{error_list}"
        f"<h3>Log: the last warnings and errors of every worker, newest first</h3>{_log_rows(log or [])}"))
