"""The results as a markdown table, ``benchmarks/results/latest.json``, ``docs/benchmarks.png`` and docs/benchmarks.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

from benchmarks import cpu
from benchmarks.contenders import NAMES, ROOT
from benchmarks.rows import CPU_KEY, Row

HEADERS = {"upstream": "upstream direct", "snakeway": "snakeway", "caddy": "Caddy", "nginx": "nginx"}
RESULTS = ROOT / "benchmarks" / "results" / "latest.json"
CHART = ROOT / "docs" / "benchmarks.png"
DOC = ROOT / "docs" / "benchmarks.md"
# Rows 1-5 show the CPU time of the contender's processes per unit of work: request (or connection), MiB, message.
CPU_UNITS = {1: "req", 2: "req", 3: "conn", 4: "MiB", 5: "msg"}
BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"


def _m(row: Row, name: str, key: str) -> float:
    value = row.cells[name].median(key)
    return float("nan") if value is None else value


def _stored_text(row: Row, name: str) -> str:
    """Row 8: the full start-up, or why it did not finish, then the smaller stores and the SNI lookup."""
    cell = row.cells[name]
    value = cell.median()
    if value is not None:
        parts = [f"{value:.1f} s, RSS {_m(row, name, 'rss_mib'):.0f} MiB"]
    else:
        parts = [cell.na or "n/a: no result"]
    if cell.median("one_cert_s") is not None:
        parts.append(f"with 1 cert: {_m(row, name, 'one_cert_s'):.1f} s, {_m(row, name, 'one_cert_rss_mib'):.0f} MiB")
    if cell.median("mid_s") is not None:
        parts.append(f"with {_m(row, name, 'mid_count'):,.0f}: {_m(row, name, 'mid_s'):.1f} s, "
                     f"{_m(row, name, 'mid_rss_mib'):.0f} MiB")
    if cell.median("sni_hit_us") is not None:
        parts.append(f"SNI lookup {_m(row, name, 'sni_hit_us'):.2f} µs (miss {_m(row, name, 'sni_miss_us'):.2f} µs, "
                     f"1-entry map {_m(row, name, 'sni_one_entry_us'):.2f} µs)")
    return "; ".join(parts).replace("|", "/")


def cell_text(row: Row, name: str) -> str:
    cell = row.cells[name]
    value = cell.median()
    if row.number == 8 and name == "snakeway":
        return _stored_text(row, name)
    if value is None:
        text = cell.na or "n/a: no result"
        if cell.notes and not cell.na:
            text += f" ({cell.notes[0]})"
        return text.replace("|", "/")
    n = row.number
    if n in (1, 2):
        text = f"{value:,.0f} req/s · p50 {_m(row, name, 'p50_ms'):.2f} ms · p99 {_m(row, name, 'p99_ms'):.1f} ms"
    elif n == 3:
        resumed = cell.median("tls_resumed")
        kind = "" if resumed is None else f" · {resumed:.0%} of sessions resumed"
        text = f"{value:,.0f}/s · p99 {_m(row, name, 'p99_ms'):.1f} ms{kind}"
    elif n == 4:
        text = f"{value:,.0f} MiB/s · p99 {_m(row, name, 'p99_ms'):.1f} ms"
    elif n == 5:
        text = f"{value:,.0f} msg/s · p99 {_m(row, name, 'p99_ms'):.2f} ms"
    elif n == 6:
        text = f"{value:.2f} s"
    elif n == 7:
        text = f"{value:.1f} s (first name after {_m(row, name, 'first_s'):.1f} s)"
    elif n == 10:
        text = f"{value:.1f} s, {_m(row, name, 'orders'):.0f} orders"
    else:
        text = (f"RSS {value:,.0f} MiB (idle {_m(row, name, 'base_rss_mib'):,.0f} MiB, "
                f"+{_m(row, name, 'kib_per_conn'):.1f} KiB/conn, {_m(row, name, 'held'):,.0f} held; "
                f"PSS {_m(row, name, 'pss_mib'):,.0f} MiB)")
    cpu_unit = CPU_UNITS.get(n)
    if cpu_unit:
        used = cpu.cpu_text(cell.median(CPU_KEY), cpu_unit)
        text += f" · {used}" if used else ""
    failed = [note for note in cell.notes if note.startswith("round")]
    if failed:
        text += f" ⚠ {len(cell.by_round)} round(s) measured; {failed[0]}"
    return text.replace("|", "/")


def ratio_text(row: Row, other: str) -> str:
    """The ratio of the rates, then, where measured, of CPU per unit and of p99 latency (above 1: snakeway's is more)."""
    ratio = row.ratio(other)
    if ratio is None:
        return "—"
    text = f"{ratio:.2f}×"
    if row.number in CPU_UNITS:
        for key, label in ((CPU_KEY, "CPU"), ("p99_ms", "p99")):
            more = row.ratio(other, key)
            if more is not None:
                text += f" · {label} {more:.2f}×"
    return text


def table(rows: list[Row]) -> str:
    lines = [
        "| # | measure | " + " | ".join(HEADERS[n] for n in NAMES) + " | snakeway/Caddy | snakeway/nginx |",
        "|---|---|" + "---|" * len(NAMES) + "---|---|",
    ]
    for row in rows:
        cells = " | ".join(cell_text(row, name) for name in NAMES)
        direction = "higher is better" if row.higher_is_better else "lower is better"
        lines.append(f"| {row.number} | {row.title} ({row.unit}, {direction}) | {cells} | "
                     f"{ratio_text(row, 'caddy')} | {ratio_text(row, 'nginx')} |")
    return "\n".join(lines)


def row_notes(rows: list[Row]) -> list[str]:
    notes = []
    for row in rows:
        if row.note:
            notes.append(f"row {row.number}: {row.note}")
        for name in NAMES:
            for note in row.cells[name].notes:
                notes.append(f"row {row.number}, {HEADERS[name]}: {note}")
    return notes


def to_json(rows: list[Row], meta: dict[str, object]) -> dict[str, object]:
    out_rows = []
    for row in rows:
        cells = {}
        for name in NAMES:
            cell = row.cells[name]
            cells[name] = {
                "median": cell.median(),
                "by_round": {str(k + 1): v for k, v in sorted(cell.by_round.items())},
                "extra_median": {key: cell.median(key) for key in cell.extra},
                "extra_by_round": {key: {str(k + 1): v for k, v in sorted(vals.items())} for key, vals in cell.extra.items()},
                "na": cell.na,
                "notes": cell.notes,
                "text": cell_text(row, name),
            }
        out_rows.append({
            "row": row.number, "title": row.title, "unit": row.unit, "higher_is_better": row.higher_is_better,
            "note": row.note, "cells": cells,
            "ratio_snakeway_over_caddy": row.ratio("caddy"), "ratio_snakeway_over_nginx": row.ratio("nginx"),
            "cpu_ratio_snakeway_over_caddy": row.ratio("caddy", CPU_KEY),
            "cpu_ratio_snakeway_over_nginx": row.ratio("nginx", CPU_KEY),
            "p99_ratio_snakeway_over_caddy": row.ratio("caddy", "p99_ms"),
            "p99_ratio_snakeway_over_nginx": row.ratio("nginx", "p99_ms"),
        })
    return {**meta, "rows": out_rows}


def write_json(data: dict[str, object], path: Path = RESULTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def chart(rows: list[Row], meta: dict[str, object], path: Path = CHART) -> str | None:
    """A PNG with one bar panel per row; None if matplotlib is missing (the `bench` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no chart"
    panels = [row for row in rows if any(row.cells[n].median() is not None for n in NAMES)
              or (row.number == 8 and row.cells["snakeway"].median("one_cert_s") is not None)]
    if not panels:
        return "nothing to plot"
    colors = {"upstream": "#9e9e9e", "snakeway": "#2e7d32", "caddy": "#1565c0", "nginx": "#ef6c00"}
    cols = 2
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(12, 2.6 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, row in zip(axes.flat, panels, strict=False):  # the grid may have more cells than panels
        if row.number == 8:
            _stored_panel(ax, row, colors["snakeway"])
            continue
        labels, values, fills = [], [], []
        for name in NAMES:
            value = row.cells[name].median()
            if value is not None:
                labels.append(HEADERS[name])
                values.append(value)
                fills.append(colors[name])
        bars = ax.barh(labels, values, color=fills)
        ax.invert_yaxis()
        for bar, value in zip(bars, values, strict=True):
            text = f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {text}", va="center", fontsize=8)
        ax.set_xlim(0, max(values) * 1.25)
        better = "higher is better" if row.higher_is_better else "lower is better"
        ax.set_title(f"{row.number}. {row.title}\n{row.unit}, {better}", fontsize=9)
        ax.tick_params(labelsize=8)
    machine = meta.get("machine", {})
    fig.suptitle(f"snakeway benchmarks — {machine.get('cpu_model')}, {machine.get('cores')} cores, "
                 f"{meta.get('settings', {}).get('rounds')} rounds × {meta.get('settings', {}).get('seconds')} s, "
                 f"{meta.get('finished', '')}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None


def _stored_panel(ax, row: Row, color: str) -> None:  # noqa: ANN001 - a matplotlib Axes
    """Row 8: snakeway's start-up time by number of stored certificates; a hatched bar if it gave up."""
    cell = row.cells["snakeway"]
    points = [("1 cert", cell.median("one_cert_s"), False)]
    if cell.median("mid_s") is not None:
        points.append((f"{cell.median('mid_count'):,.0f} certs", cell.median("mid_s"), False))
    total = row.title.split(" stored")[0].split()[-1]
    if cell.median() is not None:
        points.append((f"{total} certs", cell.median(), False))
    elif cell.median("gave_up_s") is not None:
        points.append((f"{total} certs", cell.median("gave_up_s"), True))
    labels = [p[0] for p in points]
    values = [p[1] or 0.0 for p in points]
    bars = ax.barh(labels, values, color=color)
    ax.invert_yaxis()
    for bar, (_, value, gave_up) in zip(bars, points, strict=True):
        if gave_up:
            bar.set_hatch("//")
            bar.set_alpha(0.5)
        text = f" > {value:,.0f} s: not serving yet, gave up" if gave_up else f" {value:,.1f} s"
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=8)
    ax.set_xlim(0, max(values) * 1.6)
    ax.set_title("8. snakeway start-up to first response, by stored certificates\ns, lower is better", fontsize=9)
    ax.tick_params(labelsize=8)


def doc_section(rows: list[Row], meta: dict[str, object], chart_note: str | None) -> str:
    machine, versions, settings = meta["machine"], meta["versions"], meta["settings"]
    assert isinstance(machine, dict) and isinstance(versions, dict) and isinstance(settings, dict)
    lines = [
        BEGIN,
        f"Run finished {meta['finished']} (`make bench`, {settings['rounds']} rounds of {settings['seconds']} s; "
        f"ACME and scale rows: {settings['slow_rounds']} round(s)).",
        "",
        f"Machine: {machine['cpu_model']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}, {machine['os']}.  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".  ",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + ".  ",
        f"Load average (1, 5, 15 min) at start: {meta.get('load_average_at_start')}, at end: "
        f"{meta.get('load_average_at_end')}; the run took {float(str(meta.get('duration_s', 0))) / 60:.0f} min.",
        "",
        table(rows),
        "",
    ]
    notes = row_notes(rows)
    if notes:
        lines += ["Notes from this run:", ""] + [f"- {note}" for note in notes] + [""]
    lines.append(f"*{chart_note}*" if chart_note else "![benchmark chart](benchmarks.png)")
    lines += ["", END]
    return "\n".join(lines)


def update_doc(section: str, path: Path = DOC) -> None:
    """Replace the results section of docs/benchmarks.md (the rest of the page is hand-written)."""
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n## Latest results\n\n{BEGIN}\n{END}\n"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    path.write_text(pattern.sub(lambda _: section, text, count=1))
