"""List and watch of one kind of Kubernetes object with the `kubernetes` client.

This is client-go's reflector loop, small: list once, then watch from the list's
resourceVersion, resuming from the last version seen (events and bookmarks) whenever the
stream ends; only when the server says 410 Gone (the history from that version is compacted)
is the kind listed again, and the list replaces what the consumer holds. Any other trouble
(server down, 403, bad kubeconfig) is reported and retried with capped exponential backoff.

The client's own object models are bypassed: lists are requested without preloading and
parsed with orjson, and watch events are read line by line from the chunked response. Turning
every pod into generated model objects costs far more than the metadata we keep, and the
client's `Watch` helper cannot report the resourceVersion of undeserialized events.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter
from urllib3 import HTTPResponse
from urllib3.exceptions import HTTPError, MaxRetryError

from logferry.settings import yaml_problem

log = logging.getLogger("collector.enrich")

CONNECT_TIMEOUT = 10.0
WATCH_SECONDS = (300, 600)
"""Server-side watch duration, drawn at random per watch (as client-go does) so that the
DaemonSet's pods do not all reconnect at the same moment."""
READ_SLACK = 30.0
"""How much longer than the watch's own timeout a silent connection is trusted."""
BACKOFF_BASE = 0.5

Call = Callable[..., HTTPResponse]
"""A `CoreV1Api.list_*` method with its selectors bound and `_preload_content=False`."""


class Gone(Exception):
    """The server no longer holds the history since our resourceVersion: list again."""


def api_client(kubeconfig: str | None) -> client.ApiClient:
    """A client configured as kubectl would be: an explicit file, else KUBECONFIG, else the
    pod's service account, else ~/.kube/config. Contacts no server. Raises ConfigException
    in one line naming where the configuration was looked for."""
    cfg = client.Configuration()
    # Our loop retries with backoff; urllib3's own immediate retries would only add log noise.
    cfg.retries = 0
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        load_kubeconfig(path, path if kubeconfig else f"KUBECONFIG {path}", cfg)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config(client_configuration=cfg)
        except (config.ConfigException, OSError) as exc:
            raise config.ConfigException(f"in-cluster service account: {exc}") from exc
    else:
        default = os.path.expanduser("~/.kube/config")
        if not os.path.exists(default):
            raise config.ConfigException(
                "no credentials: not in a cluster (KUBERNETES_SERVICE_HOST unset), "
                f"no KUBECONFIG and no {default}"
            )
        load_kubeconfig(default, default, cfg)
    return client.ApiClient(cfg)


def load_kubeconfig(path: str, where: str, cfg: client.Configuration) -> None:
    try:
        config.load_kube_config(config_file=path, client_configuration=cfg, persist_config=False)
    except config.ConfigException as exc:
        raise config.ConfigException(f"{where}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise config.ConfigException(f"{where}: {yaml_problem(exc)}") from exc
    except OSError as exc:
        raise config.ConfigException(f"{where}: cannot read: {exc.strerror or exc}") from exc
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # The client walks the file's YAML without checking its shape: a list, a word or
        # bad base64 where it expects a mapping or a certificate fails deep inside it.
        raise config.ConfigException(
            f"{where}: not a kubeconfig ({type(exc).__name__}: {exc})"
        ) from exc


def describe(exc: BaseException) -> tuple[str, str]:
    """(kind, text) of a failure: the kind decides whether it was logged already."""
    if isinstance(exc, ApiException):
        message = ""
        try:
            body = orjson.loads(exc.body or b"")
            if isinstance(body, dict):
                message = str(body.get("message") or "")
        except orjson.JSONDecodeError:
            message = str(exc.body or "")[:200]
        text = f"HTTP {exc.status} {exc.reason}" + (f": {message}" if message else "")
        return f"http-{exc.status}", text
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    return type(exc).__name__, str(exc) or type(exc).__name__


class Reflector:
    """Keeps one consumer in step with one kind of object; runs in its own daemon thread.

    `replace` gets every object of a list, `event` each watch event after it, and `state`
    whether the watch is up (with the failure when it is not); `restarts` counts watches
    opened after the first, `relists` lists after the first.
    """

    def __init__(
        self,
        resource: str,
        call: Call,
        *,
        replace: Callable[[list[dict[str, Any]]], None],
        event: Callable[[str, dict[str, Any]], None],
        state: Callable[[str, bool, BaseException | None], None],
        restarts: Counter,
        relists: Counter,
        backoff_max: float,
        stop: threading.Event,
    ) -> None:
        self.resource = resource
        self.call = call
        self.replace = replace
        self.event = event
        self.state = state
        self.restarts = restarts
        self.relists = relists
        self.backoff_max = backoff_max
        self.stop = stop
        self.rv: str | None = None
        self.listed = False
        self.watches = 0
        self.connected = False
        self.response: HTTPResponse | None = None
        self.thread = threading.Thread(target=self.run, name=f"watch-{resource}", daemon=True)

    def run(self) -> None:
        failures = 0
        gone_in_a_row = 0
        while not self.stop.is_set():
            try:
                if self.rv is None:
                    self.list_all()
                began = time.monotonic()
                self.watch()
                failures = gone_in_a_row = 0
                # The server ends a healthy watch at its timeout; one that ends at once, over
                # and over, must not be reopened in a tight loop.
                if time.monotonic() - began < 1.0:
                    self.stop.wait(self.backoff(0))
            except Gone:
                self.rv = None
                gone_in_a_row += 1
                if gone_in_a_row > 1:
                    self.stop.wait(self.backoff(gone_in_a_row - 2))
            except (ApiException, HTTPError, OSError, ValueError, config.ConfigException) as exc:
                if self.stop.is_set():
                    break
                # A watch that was up and broke (an API server restart, a load balancer's idle
                # timeout) is resumed once before anyone is told.
                if not (failures == 0 and self.connected):
                    self.state(self.resource, False, exc)
                self.connected = False
                self.stop.wait(self.backoff(failures))
                failures += 1
            except Exception as exc:
                # A bug, not API trouble: the thread must outlive it, and it must be seen.
                log.exception("watch of %s failed unexpectedly", self.resource)
                self.state(self.resource, False, exc)
                self.stop.wait(self.backoff(failures))
                failures += 1

    def backoff(self, attempt: int) -> float:
        """Capped exponential with equal jitter: never zero, never above backoff_max."""
        ceiling = min(self.backoff_max, BACKOFF_BASE * 2 ** min(attempt, 30))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def list_all(self) -> None:
        # The first list may be served from the API server's watch cache (resourceVersion=0,
        # no etcd read); after a 410 a consistent read is needed, as client-go does.
        rv = None if self.listed else "0"
        response = self.call(resource_version=rv, _request_timeout=(CONNECT_TIMEOUT, 60.0))
        try:
            body = orjson.loads(response.data)
        finally:
            response.release_conn()
        items = body.get("items") or []
        self.replace(items)
        if self.listed:
            self.relists.inc()
        self.listed = True
        self.rv = str(body["metadata"]["resourceVersion"])

    def watch(self) -> None:
        self.watches += 1
        if self.watches > 1:
            self.restarts.inc()
        seconds = random.randint(*WATCH_SECONDS)
        try:
            response = self.call(
                watch=True,
                resource_version=self.rv,
                allow_watch_bookmarks=True,
                timeout_seconds=seconds,
                _request_timeout=(CONNECT_TIMEOUT, seconds + READ_SLACK),
            )
        except ApiException as exc:
            # Etcd's answer to a watch from a compacted version, where the watch cache would
            # send an ERROR event instead.
            if exc.status == 410:
                raise Gone(exc.reason) from exc
            raise
        self.response = response
        try:
            if self.stop.is_set():
                return
            self.connected = True
            self.state(self.resource, True, None)
            pending = b""
            for chunk in response.stream(amt=None, decode_content=False):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        self.handle(orjson.loads(line))
                if self.stop.is_set():
                    return
        finally:
            self.response = None
            response.release_conn()

    def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone(obj.get("message"))
            raise ApiException(
                status=obj.get("code"), reason=f"{obj.get('reason')}: {obj.get('message')}"
            )
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self.event(kind, obj)
        if rv:
            self.rv = str(rv)

    def interrupt(self) -> None:
        """Unblocks a thread waiting in the watch's socket read (called after `stop` is set)."""
        response = self.response
        if response is not None:
            # Already released or closed: then nothing is blocked on it.
            with contextlib.suppress(ValueError, RuntimeError, OSError):
                response.shutdown()
