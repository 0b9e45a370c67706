"""`taskmaster loadtest` against a real in-process server: it passes on a correct server,
and its correctness check fails on one that drops or duplicates an event."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from realtime import cli, keys
from realtime.delivery import Outgoing, Target
from realtime.loadtest import Options, run
from realtime.loadtest.check import ScopeTrack
from realtime.loadtest.command import exit_code
from realtime.loadtest.report import PLOT_HINT, draw_pngs, render_table
from realtime.loadtest.tabs import STAGE_SAMPLE_EVERY, Tracker
from realtime.validation import iso

from conftest import Api

ROOT = Path(__file__).resolve().parent.parent
ARTILLERY = ROOT / "bench" / "artillery"


def url_of(api: Api) -> str:
    return str(api.client.make_url("/")).rstrip("/")


def small(api: Api, **kw: Any) -> Options:
    values: dict[str, Any] = {
        "urls": [url_of(api)], "sockets": 20, "users": 5, "rate": 40.0, "duration": 1.5,
        "register": True, "quiet": True, "settle": 0.2, "drain_timeout": 5.0, "seed": 7,
        "via": "both", **kw}
    return Options(**values)


def break_delivery(api: Api, misbehave: Callable[[Callable[..., bool], str, Outgoing], bool],
                   nth: int) -> list[str]:
    """Make the app's delivery engine misbehave on the `nth` task event it sends."""
    gateway = api.app[keys.SOCKETS]
    delivery = gateway.delivery
    real_deliver = delivery.deliver  # every packet passes here (`send` is one-packet deliver)

    def real_send(eio_sid: str, packet: Outgoing) -> bool:
        socket = gateway.sio.eio.sockets.get(eio_sid)
        return socket is not None and real_deliver(Target(eio_sid, socket), (packet,))

    seen = [0]
    touched: list[str] = []

    def send(eio_sid: str, packet: Outgoing) -> bool:
        encoded = packet.encoded
        if isinstance(encoded, str) and encoded.startswith('2["task:'):
            seen[0] += 1
            if seen[0] == nth:
                touched.append(encoded[:60])
                return misbehave(real_send, eio_sid, packet)
        return real_send(eio_sid, packet)

    def deliver(target: Target, packets: Sequence[Outgoing], frames: bytes | None = None
                ) -> bool:
        # The relay's burst path, taken apart packet by packet so `nth` counts packets.
        ok = True
        for packet in packets:
            ok = send(target.eio_sid, packet) and ok
        return ok

    delivery.deliver = deliver
    return touched


# -- a correct server ---------------------------------------------------------------------


async def test_loadtest_command_passes_on_a_correct_server(api: Api, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    tokens = tmp_path / "tokens.jsonl"
    argv = ["loadtest", "--url", url_of(api), "--sockets", "20", "--users", "5",
            "--rate", "40", "--duration", "2", "--via", "both", "--register",
            "--save-tokens", str(tokens), "--json", str(report_path),
            "--server-pid", str(os.getpid()), "--server-pid", str(os.getpid()),
            "--quiet", "--settle", "0.2", "--seed", "3"]
    # The real command line, with its own event loop in a thread; the server keeps
    # serving on this one.
    code = await asyncio.to_thread(cli.main, argv)
    report = json.loads(report_path.read_text())
    assert code == 0, report["correctness"]
    assert report["ok"] is True and report["exit_code"] == 0
    assert report["connect"]["connected"] == 20 and report["connect"]["failed"] == 0
    assert report["connect"]["connects_per_s"] > 0
    writes = report["writes"]
    assert writes["sent"] == writes["acked"] == 80 and not writes["errors"]
    assert writes["by_via"] == {"rest": 40, "socket": 40}
    # every write reaches the 4 sockets of its user
    assert report["deliveries"]["count"] == 80 * 4
    assert report["deliveries"]["per_s"] > 0
    latency = report["latency_ms"]
    assert latency["count"] == 80 * 4
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert report["latency_histogram_ms"]
    # one live delivery in 8 split at the envelope's commit time: both stages are there
    stages = report["stages_ms"]
    assert stages["sample_every"] == 8
    assert stages["send_to_ts"]["count"] == stages["ts_to_delivery"]["count"] == 80 * 4 // 8
    assert stages["send_to_ts"]["p50"] > -1  # ts is truncated to the ms
    assert 0 < stages["ts_to_delivery"]["p50"] < latency["max"]
    server, other = report["servers"]
    assert server["readable"] and server["rss_max_mib"] > 0
    assert server["cpu_cores_writes"] is not None
    assert server["role"] == "server" and server["deliveries"] == 80 * 4
    assert server["cpu_us_per_write"] > 0
    # a pid past one per --url is watched as another process of the deployment
    assert other["role"] == "other" and other["url"] is None and "deliveries" not in other
    assert other["cpu_us_per_write"] > 0
    correctness = report["correctness"]
    assert correctness["ok"] and correctness["sockets_checked"] == 20
    assert correctness["scopes_checked"] == 5
    assert set(correctness["failures"]) >= {"missing", "duplicate", "out_of_order",
                                            "state_differs"}
    assert not any(correctness["failures"].values())
    assert report["timeline"] and {"t", "connected", "deliveries", "p99_ms"} <= set(
        report["timeline"][-1])
    assert len(tokens.read_text().splitlines()) == 5
    table = render_table(report)
    assert "PASS" in table and "commit ts->delivery ms" in table and "us/write" in table


def test_a_delivery_is_split_at_the_commit_time() -> None:
    """Send -> delivery is cut at the envelope's `ts` (wall clock, in ms) on the client's
    perf_counter scale; the two stages add up to the whole; one delivery in 8 is split."""
    tracker = Tracker()
    sent = time.perf_counter()
    committed = time.time() + 0.012  # the server commits 12 ms after the send
    ts = iso(datetime.fromtimestamp(committed, UTC))
    tracker.record_stages(sent, sent + 0.030, ts)
    (to_ts,), (to_delivery,) = tracker.send_to_ts, tracker.ts_to_delivery
    assert abs(to_ts - 0.012) < 0.002  # the ms truncation and the two clock reads
    assert abs(to_ts + to_delivery - 0.030) < 1e-9
    tracker.record_stages(sent, sent + 0.03, "not a time")
    assert len(tracker.send_to_ts) == 1
    tracker.sent_at["m1"] = sent
    task = {"seq": 1, "title": "x"}
    for n in range(STAGE_SAMPLE_EVERY * 2):
        tracker.delivered("user:1", {**task, "seq": n + 1}, sent + 0.01, "m1", 0, ts)
    tracker.delivered("user:1", {**task, "seq": 99}, sent + 0.01, "m1", 0)  # no ts: a page
    assert len(tracker.latency) == STAGE_SAMPLE_EVERY * 2 + 1
    assert len(tracker.send_to_ts) == 1 + 2


async def test_users_from_a_tokens_file_with_existing_tasks(api: Api, tmp_path: Path) -> None:
    """Pre-minted tokens (bare), users who already have tasks: sockets start from the
    scope's current seq and must end equal to the whole state."""
    lines = []
    for _ in range(3):
        user = await api.as_new_user()
        for n in range(3):
            assert (await user.post("/api/tasks", json={"title": f"before {n}"})).status == 201
        lines.append(user.token)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("# bare tokens\n" + "\n".join(lines) + "\n")
    report = await run(small(api, register=False, tokens_file=tokens, users=3, sockets=9,
                             via="socket", duration=1.0))
    assert report["ok"], report["correctness"]
    assert report["deliveries"]["count"] == report["writes"]["acked"] * 3


# -- broken servers: the check must fail ----------------------------------------------------


async def test_a_dropped_event_fails_the_check(api: Api) -> None:
    touched = break_delivery(api, lambda send, sid, packet: True, nth=12)  # "sent", never is
    report = await run(small(api))
    assert touched, "the broken server never dropped anything"
    assert report["ok"] is False and exit_code(report) == 1
    failures = report["correctness"]["failures"]
    assert failures["missing"] == 1, report["correctness"]
    assert failures["duplicate"] == 0 and failures["out_of_order"] == 0
    assert report["correctness"]["sockets_with_failures"] == 1
    assert any("missing" in example for example in report["correctness"]["examples"])
    assert "FAIL" in render_table(report) and "missing" in render_table(report)


async def test_a_duplicated_event_fails_the_check(api: Api) -> None:
    def twice(send: Callable[..., bool], sid: str, packet: Outgoing) -> bool:
        send(sid, packet)
        return send(sid, packet)

    touched = break_delivery(api, twice, nth=12)
    report = await run(small(api))
    assert touched, "the broken server never duplicated anything"
    assert report["ok"] is False and exit_code(report) == 1
    failures = report["correctness"]["failures"]
    assert failures["duplicate"] == 1, report["correctness"]
    assert failures["missing"] == 0 and failures["state_differs"] == 0
    assert any("duplicate" in example for example in report["correctness"]["examples"])


async def test_an_event_leaked_to_another_user_fails_the_check(api: Api) -> None:
    gateway = api.app[keys.SOCKETS]

    def leak(send: Callable[..., bool], eio_sid: str, packet: Outgoing) -> bool:
        sid = gateway.sio.manager.sid_from_eio_sid(eio_sid, "/")
        owner = gateway.sessions[sid].user_id
        other = next(s for s in gateway.sessions.values() if s.user_id != owner)
        send(other.eio_sid, packet)
        return send(eio_sid, packet)

    touched = break_delivery(api, leak, nth=12)
    report = await run(small(api))
    assert touched
    assert report["ok"] is False and exit_code(report) == 1
    failures = report["correctness"]["failures"]
    assert failures["foreign_scope"] == 1, report["correctness"]
    assert failures["missing"] == failures["duplicate"] == failures["state_differs"] == 0


async def test_a_dropped_socket_reconnects_with_its_cursors(api: Api) -> None:
    """The server drops a socket (and the event it was sending): the harness reconnects
    with its cursors, the server's catch-up `sync` page fills the gap, and all is well."""
    gateway = api.app[keys.SOCKETS]

    def drop_socket(send: Callable[..., bool], eio_sid: str, packet: Outgoing) -> bool:
        sid = gateway.sio.manager.sid_from_eio_sid(eio_sid, "/")
        asyncio.get_running_loop().create_task(gateway.sio.disconnect(sid))
        return True  # never sent

    touched = break_delivery(api, drop_socket, nth=12)
    report = await run(small(api))
    assert touched
    assert report["ok"], report["correctness"]
    assert report["reconnects"] == 1
    assert report["deliveries"]["sync_pages"] >= 1
    assert report["deliveries"]["via_sync_pages"] >= 1


async def test_the_command_exits_1_on_a_broken_server(api: Api, tmp_path: Path) -> None:
    break_delivery(api, lambda send, sid, packet: True, nth=5)
    argv = ["loadtest", "--url", url_of(api), "--sockets", "8", "--users", "2", "--rate",
            "30", "--duration", "1", "--register", "--quiet", "--settle", "0.1",
            "--drain-timeout", "3", "--json", str(tmp_path / "r.json")]
    assert await asyncio.to_thread(cli.main, argv) == 1
    assert json.loads((tmp_path / "r.json").read_text())["exit_code"] == 1


async def test_no_server_is_an_error_not_a_pass(tmp_path: Path) -> None:
    report = await run(Options(urls=["http://127.0.0.1:9"], sockets=2, users=1, rate=1,
                               duration=0.5, register=True, quiet=True, write_timeout=2))
    assert report["ok"] is False and exit_code(report) == 3
    assert report["error"]


# -- the seq bookkeeping itself -------------------------------------------------------------


def task(seq: int, task_id: str = "t") -> dict[str, Any]:
    return {"id": task_id, "scope": "user:u", "seq": seq, "version": 1}


def test_scope_track_classifies_what_it_receives() -> None:
    track = ScopeTrack("user:u", start=4)
    for seq in (5, 6, 8):  # 7 skipped
        track.event(seq, task(seq, f"t{seq}"))
    assert track.holes == {7} and track.missing(8) == 1
    track.event(7, task(7, "t7"))  # late: out of order, no longer missing
    track.event(8, task(8, "t8"))  # again: duplicate
    assert track.counts == {"out_of_order": 1, "duplicate": 1}
    assert track.missing(8) == 0 and track.missing(10) == 2
    # a sync page stands for every seq up to its own, superseded ones included
    track.page(12, [task(10, "a"), task(12, "b")], reset=False)
    assert track.top == 12 and track.missing(12) == 0
    track.page(13, [task(11, "c")], reset=False)  # a change the socket already passed
    assert track.counts["duplicate"] == 2
    assert track.tasks["b"]["seq"] == 12


def test_draw_pngs_without_matplotlib_says_so(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert draw_pngs({}, [], [], 0.0, tmp_path) == PLOT_HINT  # type: ignore[arg-type]


def test_draw_pngs(tmp_path: Path) -> None:
    from array import array

    report = {"options": {"sockets": 2, "users": 1, "rate": 10.0, "via": "rest"},
              "latency_ms": {"p50": 2.0, "p99": 9.0, "max": 12.0}}
    latency = array("d", [0.001 * (1 + i % 10) for i in range(200)])
    at = array("d", [i / 50 for i in range(200)])
    paths = draw_pngs(report, latency, at, 0.0, tmp_path)
    assert isinstance(paths, list) and len(paths) == 2
    for path in paths:
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the Artillery alternative ---------------------------------------------------------------


def test_artillery_processor_is_valid_javascript() -> None:
    node = shutil.which("node")
    assert node is not None, "node is required (the Node client tests use it too)"
    subprocess.run([node, "--check", str(ARTILLERY / "processor.js")], check=True,
                   timeout=30)


def test_artillery_scenario_parses() -> None:
    import yaml

    script = yaml.safe_load((ARTILLERY / "taskmaster.yml").read_text())
    config = script["config"]
    assert config["target"] and config["phases"] and config["processor"]
    assert config["socketio"]["transports"] == ["websocket"]
    assert script["before"]["flow"]
    for scenario in script["scenarios"]:
        assert scenario["engine"] == "socketio"
        # templated per virtual user (config templates are resolved before `before` runs)
        assert scenario["socketio"]["auth"]["token"] == "{{ token }}"
