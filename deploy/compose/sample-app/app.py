"""A stand-in workload for the compose demo: writes the logs a small shop would write.

STYLE=java     a Spring Boot style service: INFO/WARN lines on stdout, ERROR lines followed by
               Java stack traces (with `Caused by:` and `... N more`) on stderr
STYLE=access   a web front end: combined-format access lines on stdout, a few JSON error lines
               on stderr
RATE           lines per second, roughly (default 5)

Standard library only; runs in the stock python image.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from datetime import UTC, datetime

STYLE = os.environ.get("STYLE", "java")
RATE = float(os.environ.get("RATE", "5"))
SERVICE = os.environ.get("SERVICE", "checkout")
rng = random.Random(8)

PATHS = ["/", "/cart", "/api/cart/items", "/api/checkout", "/static/app.js", "/healthz"]
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Safari/605.1.15",
    "kube-probe/1.37",
]
TRACE = """java.lang.IllegalStateException: payment authorisation failed for order {order}
\tat com.example.shop.checkout.PaymentClient.authorise(PaymentClient.java:88)
\tat com.example.shop.checkout.CheckoutService.placeOrder(CheckoutService.java:142)
\tat com.example.shop.checkout.CheckoutController.checkout(CheckoutController.java:57)
\tat java.base/java.lang.reflect.Method.invoke(Method.java:580)
\tat org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:885)
\tat org.apache.tomcat.util.threads.TaskThread$WrappingRunnable.run(TaskThread.java:61)
\tat java.base/java.lang.Thread.run(Thread.java:1583)
Caused by: java.net.SocketTimeoutException: Read timed out
\tat java.base/sun.nio.ch.NioSocketImpl.timedRead(NioSocketImpl.java:278)
\tat java.base/java.net.Socket$SocketInputStream.read(Socket.java:1099)
\tat com.example.shop.checkout.PaymentClient.authorise(PaymentClient.java:81)
\t... 5 more"""


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def java_line() -> None:
    order = rng.randrange(100_000, 999_999)
    roll = rng.random()
    thread = f"http-nio-8080-exec-{rng.randrange(1, 10)}"
    prefix = f"{now()}  {{}} 1 --- [{thread}] c.e.shop.checkout.CheckoutService   : "
    if roll < 0.05:
        print(prefix.format("ERROR") + f"order {order} failed", file=sys.stderr, flush=True)
        print(TRACE.format(order=order), file=sys.stderr, flush=True)
    elif roll < 0.15:
        ms = rng.randrange(800, 3000)
        print(prefix.format(" WARN") + f"payment provider slow: {ms} ms for order {order}")
    else:
        items = rng.randrange(1, 6)
        print(prefix.format(" INFO") + f"order {order} placed with {items} items")


def access_line() -> None:
    if rng.random() < 0.03:
        error = {"time": now(), "level": "error", "msg": "upstream timed out", "upstream": SERVICE}
        print(json.dumps(error), file=sys.stderr, flush=True)
        return
    path = rng.choice(PATHS)
    status = rng.choices([200, 304, 404, 502], weights=[85, 8, 5, 2])[0]
    ip = f"10.1.{rng.randrange(0, 255)}.{rng.randrange(1, 255)}"
    stamp = datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    size = rng.randrange(200, 40_000)
    agent = rng.choice(AGENTS)
    print(f'{ip} - - [{stamp}] "GET {path} HTTP/1.1" {status} {size} "-" "{agent}"')


def main() -> None:
    write = java_line if STYLE == "java" else access_line
    print(f"{now()}  INFO 1 --- [main] starting {SERVICE} ({STYLE} logs, {RATE}/s)", flush=True)
    while True:
        write()
        sys.stdout.flush()
        time.sleep(rng.expovariate(RATE))


if __name__ == "__main__":
    main()
