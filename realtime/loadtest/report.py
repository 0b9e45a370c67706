"""The end of a run: the summary table, the JSON report, the PNGs (with matplotlib)."""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import Any

import orjson

from .check import KIND_HELP

PLOT_HINT = ("PNGs need matplotlib: pip install 'taskmaster-realtime[plot]' "
             "(or pip install 'matplotlib>=3.8')")


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _lat(summary: dict[str, Any]) -> str:
    if not summary.get("count"):
        return "-"
    return " / ".join(_n(summary[k], 1) for k in ("p50", "p95", "p99", "max"))


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    o = report["options"]
    rows: list[tuple[str, str]] = []
    rows.append(("target", f"{', '.join(o['urls'])}"))
    rows.append(("load", f"{_n(o['sockets'])} sockets as {_n(o['users'])} users, "
                         f"{_n(o['rate'], 0)} writes/s via {o['via']} "
                         f"for {_n(o['duration'], 0)} s"))
    c = report.get("connect") or {}
    if c:
        line = (f"{_n(c['connected'])}/{_n(c['sockets'])} in {_n(c['elapsed_s'], 1)} s "
                f"= {_n(c['connects_per_s'], 0)}/s; failed {_n(c['failed'])}")
        if c.get("errors"):
            line += " " + ", ".join(f"{k}: {v}" for k, v in c["errors"].items())
        rows.append(("connect", line))
        rows.append(("handshake ms p50/p95/p99/max", _lat(c.get("handshake_ms") or {})))
    w = report["writes"]
    errors = sum(w["errors"].values())
    line = (f"{_n(w['sent'])} sent ({_n(w['achieved_rate'], 0)}/s), {_n(w['acked'])} acked, "
            f"{_n(errors)} errors")
    if w["errors"]:
        line += " (" + ", ".join(f"{k}: {v}" for k, v in w["errors"].items()) + ")"
    if w["skipped_max_inflight"]:
        line += f", {_n(w['skipped_max_inflight'])} skipped (too many in flight)"
    if w["sent_late_50ms"]:
        line += f", {_n(w['sent_late_50ms'])} sent >50 ms late (client saturated)"
    rows.append(("writes", line))
    rows.append(("write ack ms p50/p95/p99/max", _lat(w["ack_latency_ms"])))
    d = report["deliveries"]
    rows.append(("deliveries", f"{_n(d['count'])} ({_n(d['per_s'], 0)}/s; "
                               f"{_n(d['via_sync_pages'])} through {_n(d['sync_pages'])} "
                               "sync pages)"))
    rows.append(("write->delivery ms p50/p95/p99/max", _lat(report["latency_ms"])))
    stages = report.get("stages_ms") or {}
    if (stages.get("send_to_ts") or {}).get("count"):
        every = stages["sample_every"]
        rows.append((" send->commit ts ms", f"{_lat(stages['send_to_ts'])} "
                                            f"(1 delivery in {every})"))
        rows.append((" commit ts->delivery ms", _lat(stages["ts_to_delivery"])))
    drain = report["drain"]
    rows.append(("drain", f"{_n(drain['seconds'], 2)} s after the last write answer"
                          + ("" if drain["complete"] else " (INCOMPLETE: timed out)")))
    for server in report["servers"]:
        if not server.get("readable"):
            rows.append((server["label"], "not readable here (/proc)"))
            continue
        marks = server.get("rss_marks_mib", {})
        label = server["label"] + (f" ({server['url']})" if len(report["servers"]) > 1
                                   and server.get("url") else "")
        if server.get("role") == "other":
            rows.append((label, (
                f"CPU {_n(server.get('cpu_cores_writes'), 2)} cores during writes "
                f"(max {_n(server.get('cpu_cores_max'), 2)}), "
                f"{_n(server.get('cpu_us_per_write'), 0)} us/write; "
                f"RSS {_n(server.get('rss_max_mib'), 0)} MiB max")))
            continue
        rows.append((label, (
            f"CPU {_n(server.get('cpu_cores_writes'), 2)} cores during writes "
            f"(max {_n(server.get('cpu_cores_max'), 2)}), "
            f"{_n(server.get('cpu_us_per_write'), 0)} us/write, "
            f"{_n(server.get('cpu_us_per_delivery'), 1)} us/delivery; "
            f"RSS {_n(marks.get('connect_start'), 0)} -> {_n(marks.get('connected'), 0)} -> "
            f"{_n(server.get('rss_max_mib'), 0)} MiB max "
            f"({_n(server.get('kib_per_socket'), 1)} kB/socket)")))
    client = report["client"]
    lag = client.get("event_loop_lag_ms") or {}
    rows.append(("load generator", f"CPU {_n(client.get('cpu_cores_writes'), 2)} cores "
                                   f"during writes (max {_n(client.get('cpu_cores_max'), 2)}), "
                                   f"RSS {_n(client.get('rss_max_mib'), 0)} MiB max; event loop "
                                   f"lag p99 {_n(lag.get('p99'), 1)} ms, max "
                                   f"{_n(lag.get('max'), 1)} ms"))
    machine = report.get("machine") or {}
    if machine.get("busy_cores_writes") is not None:
        line = (f"{_n(machine['cpus'])} CPUs, {_n(machine['busy_cores_writes'], 2)} cores busy "
                "during writes")
        if machine.get("other_processes_cores_writes") is not None:
            line += (f", {_n(machine['other_processes_cores_writes'], 2)} of them by other "
                     "processes")
        if machine.get("cpu_stall_share_writes") is not None:
            line += (f"; something waited for a CPU {machine['cpu_stall_share_writes']:.0%} "
                     "of the time")
        if machine.get("loadavg_start"):
            line += f"; load average {machine['loadavg_start'][0]:.1f} at start"
        rows.append(("machine", line))
    if report.get("reconnects"):
        rows.append(("reconnects", _n(report["reconnects"])))
    if report.get("session_ended"):
        rows.append(("session:ended", ", ".join(f"{k}: {v}" for k, v
                                                in report["session_ended"].items())))
    verdict = report.get("correctness")
    if report.get("error"):
        rows.append(("correctness", f"NOT RUN: {report['error']}"))
    elif verdict is not None:
        failures = {k: v for k, v in verdict["failures"].items() if v}
        if verdict["ok"]:
            rows.append(("correctness", (
                f"PASS: {_n(verdict['sockets_checked'])} sockets over "
                f"{_n(verdict['scopes_checked'])} scopes got every seq once, in order, no "
                "gap; every replica equals the server's state")))
        else:
            rows.append(("correctness", (
                f"FAIL: {_n(verdict['sockets_with_failures'])} of "
                f"{_n(verdict['sockets_checked'])} sockets; "
                + ", ".join(f"{k}={_n(v)}" for k, v in failures.items()))))
    return rows


def render_table(report: dict[str, Any]) -> str:
    rows = summary_rows(report)
    width = max(len(name) for name, _ in rows)
    lines = ["", f"taskmaster loadtest {report['run_id']}: "
                 + ("PASS" if report["ok"] else "FAIL"), ""]
    lines += [f"{name.ljust(width)}  {value}" for name, value in rows]
    verdict = report.get("correctness")
    if verdict is not None and not verdict["ok"]:
        lines.append("")
        for kind, n in verdict["failures"].items():
            if n:
                lines.append(f"  {kind}: {KIND_HELP[kind]}")
        lines.append("  first failures:")
        lines += [f"    {example}" for example in verdict["examples"]]
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


def draw_pngs(report: dict[str, Any], latency: array[float], latency_at: array[float],
              offset: float, directory: Path) -> list[str] | str:
    """Latency over time and a latency histogram; the paths, or why there are none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return PLOT_HINT
    directory.mkdir(parents=True, exist_ok=True)
    ms = [v * 1000 for v in latency]
    at = [t - offset for t in latency_at]
    paths: list[str] = []
    title = (f"{report['options']['sockets']:,} sockets, {report['options']['users']:,} users, "
             f"{report['options']['rate']:g} writes/s via {report['options']['via']}")

    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    if ms:
        step = max(1, len(ms) // 50_000)  # at most 50k points drawn
        ax.scatter(at[::step], ms[::step], s=2, alpha=0.25, color="tab:blue",
                   label=f"deliveries (1 in {step})" if step > 1 else "deliveries")
        per_second: dict[int, list[float]] = {}
        for t, value in zip(at, ms, strict=True):
            per_second.setdefault(int(t), []).append(value)
        seconds = sorted(per_second)
        for pct, color in ((50, "tab:green"), (99, "tab:red")):
            values = []
            for second in seconds:
                bucket = sorted(per_second[second])
                values.append(bucket[min(len(bucket) - 1, max(0, -(-pct * len(bucket) // 100)
                                                              - 1))])
            ax.plot([s + 0.5 for s in seconds], values, color=color, linewidth=1.5,
                    label=f"p{pct} per second")
        ax.set_yscale("log")
        ax.legend(loc="upper right")
    ax.set_xlabel("seconds since the first write")
    ax.set_ylabel("write -> delivery latency (ms)")
    ax.set_title(f"Latency over time: {title}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = directory / "latency_over_time.png"
    fig.savefig(path)
    plt.close(fig)
    paths.append(str(path))

    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    if ms:
        low, high = max(min(ms), 0.01), max(ms)
        edges = [low * (high / low) ** (i / 80) for i in range(81)] if high > low else 20
        ax.hist(ms, bins=edges, color="tab:blue")
        if high > low:
            ax.set_xscale("log")
        lat = report["latency_ms"]
        for key, color in (("p50", "tab:green"), ("p99", "tab:red"), ("max", "black")):
            if lat.get(key) is not None:
                ax.axvline(lat[key], color=color, linestyle="--",
                           label=f"{key} {lat[key]:.1f} ms")
        ax.legend(loc="upper right")
    ax.set_xlabel("write -> delivery latency (ms)")
    ax.set_ylabel("deliveries")
    ax.set_title(f"Latency histogram: {title}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = directory / "latency_histogram.png"
    fig.savefig(path)
    plt.close(fig)
    paths.append(str(path))
    return paths
