"""Kubernetes API load and cache cost of collector.enrich, against the harness.k8s_api stand-in.

Starts the stand-in API server (it speaks the real wire format to the real `kubernetes` client)
with `--pods` pods on this node (and `--other-pods` on other nodes, which the field selector
must keep out), runs the Enricher, then for `--seconds` creates `--rate` pods per second (each
also MODIFIED once, as kubelet reports it running) and deletes as many. Prints API requests
per minute by verb and path, the watch threads' CPU time, the cache's memory (a deep
`sys.getsizeof` walk, shared objects counted once), and the cost of a lookup.

    .venv/bin/python bench/enrich_api_load.py            # 500 pods, 50/s for 30 s
    .venv/bin/python bench/enrich_api_load.py --seconds 5
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.enrich import Enricher
from harness.k8s_api import KubeAPI, cid, namespace, pod

NODE = "node-a"


def realistic_pod(n: int, node: str = NODE) -> dict[str, Any]:
    app = f"svc-{n % 40}"
    return pod(
        f"{app}-5f7b9c8d4-{n:05d}",
        f"team-{n % 20}",
        node=node,
        labels={
            "app": app,
            "app.kubernetes.io/name": app,
            "app.kubernetes.io/part-of": f"product-{n % 7}",
            "app.kubernetes.io/version": "1.4.2",
            "tier": "backend",
        },
        annotations={
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "9090",
            "kubectl.kubernetes.io/restartedAt": "2026-11-20T10:00:00Z",
        },
        owner=("ReplicaSet", f"{app}-5f7b9c8d4"),
        containers=("app", "istio-proxy"),
        init_containers=("istio-init",),
        image=f"registry.example/{app}:1.4.2",
        ip=f"10.244.{n // 250 % 250}.{n % 250}",
    )


def deep_size(root: object) -> int:
    """Bytes of every object reachable from `root` through containers and dataclass slots."""
    seen: set[int] = set()
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, bool | int | float):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif hasattr(obj, "__slots__"):
            stack.extend(getattr(obj, s) for s in obj.__slots__ if hasattr(obj, s))
        elif hasattr(obj, "__dict__"):
            stack.append(obj.__dict__)
    return total


def thread_cpu(thread: threading.Thread) -> float:
    """User+system CPU seconds of one thread, from /proc (Linux)."""
    try:
        with open(f"/proc/self/task/{thread.native_id}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=500, help="pods on this node at start")
    parser.add_argument("--other-pods", type=int, default=1000, help="pods on other nodes")
    parser.add_argument("--rate", type=int, default=50, help="creations and deletions a second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--lookups", type=int, default=100_000)
    parser.add_argument("--grace", type=float, default=60.0)
    args = parser.parse_args()

    with KubeAPI(bookmark_every=60.0) as api, tempfile.TemporaryDirectory() as tmp:
        for n in range(20):
            api.add(namespace(f"team-{n}", labels={"owner": f"team-{n}"}))
        live: deque[dict[str, Any]] = deque(realistic_pod(n) for n in range(args.pods))
        for obj in live:
            api.add(obj)
        for n in range(args.other_pods):
            api.add(realistic_pod(100_000 + n, node="node-b"))
        api.up()

        enricher = Enricher(
            NODE, kubeconfig=api.kubeconfig(Path(tmp) / "kubeconfig"), grace=args.grace
        )
        began = time.monotonic()
        enricher.start()
        while not (enricher.synced and enricher.available):
            time.sleep(0.005)
        print(
            f"initial sync of {args.pods} pods: {(time.monotonic() - began) * 1000:.0f} ms "
            "(the client's first call builds its request models: about 0.4 s once)"
        )

        before_churn = dict(api.requests)
        cpu_before = {r.resource: thread_cpu(r.thread) for r in enricher._reflectors}
        churn_began = time.monotonic()
        made = events = 0
        next_n = args.pods
        while (elapsed := time.monotonic() - churn_began) < args.seconds:
            due = int(elapsed * args.rate) + 1
            while made < due:
                fresh = realistic_pod(next_n)
                next_n += 1
                api.add(fresh)
                fresh["status"]["phase"] = "Running"
                fresh["metadata"]["labels"]["ready"] = "true"
                api.modify(fresh)
                live.append(fresh)
                api.delete(live.popleft())
                made += 1
                events += 3
            time.sleep(max(0.0, (made / args.rate) - (time.monotonic() - churn_began)))
        churn_seconds = time.monotonic() - churn_began
        # The cache has caught up when the newest pod carries its MODIFIED label.
        newest = {"container.id": cid(live[-1])}
        caught_up_began = time.monotonic()
        while True:
            info = enricher.lookup(newest)
            if info is not None and info.fields["kubernetes.labels"].get("ready") == "true":
                break
            time.sleep(0.001)
        lag_ms = (time.monotonic() - caught_up_began) * 1000
        total_seconds = time.monotonic() - began

        print(
            f"churn: {made} created + {made} deleted in {churn_seconds:.1f} s "
            f"({made / churn_seconds:.0f}/s each; {events} watch events on this node), "
            f"{args.other_pods} pods on another node"
        )
        print(f"cache caught up {lag_ms:.1f} ms after the last change")
        print(f"API requests over {total_seconds:.1f} s (per minute):")
        for key, count in sorted(api.requests.items()):
            print(f"  {key:32s} {count:5d}  ({count / total_seconds * 60:.1f}/min)")
        print(f"  GETs of single objects: {api.count('get')}")
        during = sum(api.requests.values()) - sum(before_churn.values())
        print(
            f"requests during the churn, after the initial list+watch: {during} "
            f"({during / churn_seconds * 60:.1f}/min)"
        )
        for reflector in enricher._reflectors:
            cpu = thread_cpu(reflector.thread) - cpu_before[reflector.resource]
            print(
                f"watch thread CPU during the churn ({reflector.resource}): {cpu:.2f} s "
                f"({cpu / churn_seconds * 100:.1f} % of a core)"
            )

        known = {p["metadata"]["uid"] for p in live}
        cached = enricher._pods
        alive = {uid for uid, p in cached.items() if p.deleted_at is None}
        print(
            f"cache: {len(alive)} live pods (API has {len(known)}; "
            f"{'same set' if alive == known else 'DIFFERENT SET'}), "
            f"{len(cached) - len(alive)} deleted ones within their {args.grace:.0f} s grace"
        )

        metas = []
        for obj in live:
            metas.append({"container.id": cid(obj, "app")})
            metas.append(
                {
                    "kubernetes.namespace": obj["metadata"]["namespace"],
                    "kubernetes.pod.name": obj["metadata"]["name"],
                    "kubernetes.pod.uid": obj["metadata"]["uid"],
                    "kubernetes.container.name": "istio-proxy",
                }
            )
        built = time.perf_counter_ns()
        for meta in metas:
            enricher.lookup(meta)
        first_ns = (time.perf_counter_ns() - built) / len(metas)

        state = (cached, enricher._by_name, enricher._by_id, enricher._namespaces)
        size = deep_size(state)
        per_pod = size / max(1, len(cached))
        print(
            f"cache memory: {size / 1e6:.2f} MB for {len(cached)} pods "
            f"({per_pod / 1024:.1f} KiB a pod, memoised PodInfo included)"
        )

        n = args.lookups
        start = time.perf_counter_ns()
        for i in range(n):
            enricher.lookup(metas[i % len(metas)])
        hot_ns = (time.perf_counter_ns() - start) / n
        miss = {"container.id": "0" * 64, "kubernetes.pod.uid": "nope"}
        start = time.perf_counter_ns()
        for _ in range(n):
            enricher.lookup(miss)
        miss_ns = (time.perf_counter_ns() - start) / n
        print(
            f"lookup: {hot_ns:.0f} ns (memoised, {n} lookups, by id and by uid), "
            f"{first_ns:.0f} ns first time per container, {miss_ns:.0f} ns for an unknown pod"
        )
        enricher.stop()


if __name__ == "__main__":
    main()
