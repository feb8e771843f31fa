"""The orthanc_availability module measures outages of a real loopback HTTP server that answers 401."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType

import orthanc_availability  # library/, on sys.path through conftest.py
import pytest


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


class Unauthorized(BaseHTTPRequestHandler):
    """Orthanc without credentials: every request gets 401."""

    answered = threading.Event()

    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="Orthanc"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        Unauthorized.answered.set()

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server:
    """A 401 server that can go away and come back on the same port."""

    def __init__(self) -> None:
        self.port = 0
        self.httpd: HTTPServer | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.httpd = HTTPServer(("127.0.0.1", self.port), Unauthorized)  # reuses the address of the last run
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        assert self.httpd is not None
        assert self.thread is not None
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
        self.httpd = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/system"


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server()
    server.start()
    yield server
    if server.httpd is not None:
        server.stop()


@pytest.fixture
def files(tmp_path: Path) -> orthanc_availability.WatchFiles:
    return orthanc_availability.WatchFiles.of(tmp_path, "auscat")


@pytest.fixture
def start(files) -> Iterator[Callable[..., int]]:
    """Starts a watch through the module; pollers a failing test leaves running are ended by their pid."""
    pids: list[int] = []

    def start(url: str, interval: float = 0.05, max_seconds: int = 60) -> int:
        pid = orthanc_availability.start_watch(files, url, interval=interval, max_seconds=max_seconds)
        pids.append(pid)
        return pid

    yield start
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG) == (0, 0):
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)


@pytest.fixture
def poller(tmp_path: Path) -> ModuleType:
    path = tmp_path / "poller.py"
    orthanc_availability.write_poller(path)
    return load("orthanc_availability_poller", path)


def test_an_outage_of_the_http_port_is_recorded_once_with_its_length(server: Server, files, start) -> None:
    Unauthorized.answered.clear()
    pid = start(server.url)
    assert files.pid.read_text(encoding="utf-8") == str(pid)
    assert Unauthorized.answered.wait(5), "the poller reached the server"
    time.sleep(0.3)

    went_down = time.monotonic()
    server.stop()
    time.sleep(1.0)
    server.start()
    down = time.monotonic() - went_down
    time.sleep(0.4)

    summary = orthanc_availability.stop_watch(files)
    assert set(summary) == set(orthanc_availability.SUMMARY_KEYS)
    assert len(summary["outages"]) == 1, summary
    assert down - 0.3 <= summary["outages"][0] <= down + 0.3, (down, summary)
    assert summary["total_downtime_seconds"] == summary["longest_outage_seconds"] == summary["outages"][0]
    assert summary["down_at_end"] is False
    assert summary["samples"] >= 15
    assert 1.5 <= summary["seconds_observed"] <= 10
    assert not files.pid.exists()
    assert not files.stop.exists()


def test_a_server_still_down_when_the_watch_stops_is_reported(server: Server, files, start) -> None:
    Unauthorized.answered.clear()
    start(server.url)
    assert Unauthorized.answered.wait(5)
    server.stop()
    time.sleep(0.5)
    summary = orthanc_availability.stop_watch(files)
    assert summary["down_at_end"] is True
    assert len(summary["outages"]) == 1
    assert 0.3 <= summary["outages"][0] <= 2.0, summary


def test_a_watch_that_reached_max_seconds_still_gives_its_summary(server: Server, files, start) -> None:
    start(server.url, max_seconds=1)
    deadline = time.monotonic() + 5
    while not files.summary.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert files.summary.exists(), "the poller ended by itself"
    summary = orthanc_availability.stop_watch(files)
    assert summary["outages"] == []
    assert 1.0 <= summary["seconds_observed"] < 2.0


def test_stopping_a_watch_never_started_fails_with_the_message(files) -> None:
    with pytest.raises(orthanc_availability.WatchError) as failure:
        orthanc_availability.stop_watch(files)
    assert str(failure.value) == "no availability watch auscat is running: start it with state=started"


def test_main_fails_to_stop_a_watch_never_started(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from ansible.module_utils.testing import patch_module_args

    args = {"state": "stopped", "name": "auscat", "run_dir": str(tmp_path)}
    with patch_module_args(args), pytest.raises(SystemExit) as exited:
        orthanc_availability.main()
    assert exited.value.code == 1
    output = json.loads(capsys.readouterr().out)
    assert output["msg"] == "no availability watch auscat is running: start it with state=started"


def test_a_name_that_is_no_file_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(orthanc_availability.WatchError, match="may hold only letters"):
        orthanc_availability.WatchFiles.of(tmp_path, "../etc/auscat")


def test_measure_counts_each_stretch_without_answer_from_its_first_failed_probe(poller: ModuleType) -> None:
    answers = iter([True, True, False, False, False, True, True, False, True, False, False])
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    summary = poller.measure(
        probe=lambda: next(answers),
        should_stop=lambda: round(now[0], 6) >= 11,
        interval=1.0,
        max_seconds=60,
        clock=lambda: now[0],
        sleep=sleep,
    )
    assert list(summary) == list(orthanc_availability.SUMMARY_KEYS)
    assert summary == {
        "samples": 11,
        "seconds_observed": 11.0,
        "outages": [3.0, 1.0, 2.0],  # down at 2-4, 7 and 9-10 until the end at 11
        "total_downtime_seconds": 6.0,
        "longest_outage_seconds": 3.0,
        "down_at_end": True,
    }


def test_measure_counts_the_wait_for_a_late_answer_as_down(poller: ModuleType) -> None:
    # A frozen server (docker pause) answers once thawed: the probe returns true, seconds late.
    durations = iter([0.01, 0.8, 0.01, 0.3, 0.01, 0.9, 0.0])  # 0.8 s late, then failed and 0.9 s late
    answers = iter([True, True, True, True, False, True, True])
    now = [0.0]

    def probe() -> bool:
        now[0] += next(durations)
        return next(answers)

    def sleep(seconds: float) -> None:
        now[0] += seconds

    summary = poller.measure(
        probe=probe,
        should_stop=lambda: now[0] >= 9,
        interval=1.0,
        max_seconds=60,
        clock=lambda: now[0],
        sleep=sleep,
        stall=0.5,
    )
    assert summary["samples"] == 7
    # 1.01-1.81 awaited; 0.3 s is no stall; down from the failed probe at 5.12 until the late answer at 7.03
    assert summary["outages"] == [0.8, 1.91]
    assert summary["down_at_end"] is False


def test_poller_counts_an_http_error_as_up_and_a_refused_connection_as_down(poller: ModuleType, server: Server) -> None:
    assert poller.is_up(server.url) is True
    server.stop()
    assert poller.is_up(server.url) is False
