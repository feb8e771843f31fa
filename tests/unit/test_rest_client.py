"""The harness's REST client against a scripted HTTP server on loopback: what it sends again, and what not."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests

from tests.harness.orthanc import Orthanc

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def read_request(connection: socket.socket) -> bytes:
    """The whole request, body included: a socket closed with unread bytes would send a reset, not the
    clean close the actions script (the client writes headers and body separately)."""
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = connection.recv(65536)
        if not chunk:
            return request
        request += chunk
    head, _, body = request.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


@contextmanager
def scripted_server(*actions: str) -> Iterator[tuple[str, list[bytes]]]:
    """One connection per action: "answer" replies 200; "close" reads the request and closes without a
    reply, as Orthanc does when a kept-alive connection expires; "reset" sends all but the last byte of
    an answer and closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    requests_seen: list[bytes] = []

    def serve() -> None:
        for action in actions:
            try:
                connection, _ = listener.accept()
            except OSError:  # the listener closed: the client made fewer connections than scripted
                return
            with connection:
                requests_seen.append(read_request(connection))
                if action == "answer":
                    connection.sendall(ANSWER)
                elif action == "reset":
                    connection.sendall(ANSWER[:-1])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", requests_seen
    finally:
        listener.close()


def client(url: str) -> Orthanc:
    orthanc = Orthanc(url, "user", "password")
    orthanc.session.headers["Connection"] = "close"  # one connection per request, as scripted
    return orthanc


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_a_request_unanswered_on_a_closed_connection_is_sent_again_once(method: str) -> None:
    with scripted_server("close", "answer") as (url, seen):
        reply = client(url).session.request(method, url + "/tools/find", json={}, timeout=5)
    assert reply.status_code == 200
    assert len(seen) == 2
    assert seen[0].split(b"\r\n")[0] == seen[1].split(b"\r\n")[0]


def test_a_second_unanswered_request_is_raised() -> None:
    with scripted_server("close", "close", "answer") as (url, seen), pytest.raises(requests.ConnectionError):
        client(url).get("/system")
    assert len(seen) == 2


def test_an_answer_cut_short_is_raised_not_sent_again() -> None:
    with scripted_server("reset", "answer") as (url, seen), pytest.raises(requests.RequestException):
        client(url).get("/system")
    assert len(seen) == 1


def test_a_refused_connection_is_raised_at_once() -> None:
    with socket.create_server(("127.0.0.1", 0)) as reserved:
        port = reserved.getsockname()[1]
    with pytest.raises(requests.ConnectionError):
        client(f"http://127.0.0.1:{port}").get("/system")
