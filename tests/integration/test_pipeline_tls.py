"""An https:// Elasticsearch with its own CA, reached with --elasticsearch-ca-certs.

The local node speaks plain HTTP; a TLS-terminating proxy in this test (Python's ssl, a
certificate made by openssl) stands in front of it, so the client's real TLS handshake and
certificate check run against the real node behind it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from elasticsearch import Elasticsearch

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, target):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def tls_proxy(tmp_path: Path, elasticsearch_url: str) -> Iterator[tuple[str, Path, list[int]]]:
    """https://127.0.0.1:PORT in front of the real node, the CA file, and handshakes made."""
    cert, key = tmp_path / "ca.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    backend = urlsplit(elasticsearch_url)
    listener = socket.create_server(("127.0.0.1", 0))
    stopped = threading.Event()
    handshakes: list[int] = []

    def serve() -> None:
        while not stopped.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                client = context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                raw.close()
                continue
            handshakes.append(1)
            upstream = socket.create_connection((backend.hostname, backend.port))
            threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}", cert, handshakes
    stopped.set()
    listener.close()


def setup(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELASTICSEARCH_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "setup", "--replicas", "0", *args],
        capture_output=True, cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, text=True,
        timeout=120,
    )  # fmt: skip


def test_setup_over_tls_with_the_given_ca(
    tls_proxy: tuple[str, Path, list[int]], es: Elasticsearch
) -> None:
    url, ca, handshakes = tls_proxy
    done = setup("--elasticsearch-url", url, "--elasticsearch-ca-certs", str(ca))
    assert done.returncode == 0, done.stderr
    assert handshakes
    assert es.indices.exists_index_template(name="logferry")


def test_without_the_ca_the_certificate_is_refused(
    tls_proxy: tuple[str, Path, list[int]],
) -> None:
    url, _, handshakes = tls_proxy
    done = setup("--elasticsearch-url", url)
    assert done.returncode == 1
    assert not handshakes
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr or "certificate" in done.stderr.lower()


def test_a_ca_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    done = setup(
        "--elasticsearch-url", "https://127.0.0.1:1",
        "--elasticsearch-ca-certs", str(tmp_path / "missing.pem"),
    )  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "elasticsearch_ca_certs" in line
