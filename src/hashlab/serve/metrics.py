"""Prometheus text-format metrics, written by hand (no client library needed).

``hashlab_requests_total{endpoint,method,status}`` (counter), ``hashlab_request_seconds``
(histogram by endpoint), ``hashlab_batch_size`` (histogram of the encoder's batches),
``hashlab_index_size`` and ``hashlab_queue_depth`` (gauges).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

__all__ = ["Histogram", "Metrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _labels(pairs: dict[str, str]) -> str:
    if not pairs:
        return ""
    esc = {k: str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
           for k, v in pairs.items()}
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc.items()) + "}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


class Histogram:
    """Cumulative buckets, sum and count of observations."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: dict[str, str]) -> list[str]:
        out = [f"{name}_bucket{_labels({**labels, 'le': _num(b)})} {c}"
               for b, c in zip(self.buckets, self.counts, strict=True)]
        out.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {self.count}")
        out.append(f"{name}_sum{_labels(labels)} {_num(self.sum)}")
        out.append(f"{name}_count{_labels(labels)} {self.count}")
        return out


class Metrics:
    """The counters of one app; :meth:`render` writes them in the Prometheus text format.

    ``gauges`` maps a metric name to ``(help, function returning the value)``, read at render
    time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.batch = Histogram(BATCH_BUCKETS)
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (endpoint, method, str(status))
            self.requests[key] = self.requests.get(key, 0) + 1
            self.latency.setdefault(endpoint, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, size: int) -> None:
        with self._lock:
            self.batch.observe(size)

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP hashlab_requests_total HTTP requests by endpoint, method and "
                     "status.", "# TYPE hashlab_requests_total counter"]
            for (endpoint, method, status), n in sorted(self.requests.items()):
                labels = {"endpoint": endpoint, "method": method, "status": status}
                lines.append(f"hashlab_requests_total{_labels(labels)} {n}")
            lines += ["# HELP hashlab_request_seconds HTTP request latency in seconds.",
                      "# TYPE hashlab_request_seconds histogram"]
            for endpoint, hist in sorted(self.latency.items()):
                lines += hist.lines("hashlab_request_seconds", {"endpoint": endpoint})
            lines += ["# HELP hashlab_batch_size Images per forward pass of the encoder.",
                      "# TYPE hashlab_batch_size histogram",
                      *self.batch.lines("hashlab_batch_size", {})]
        for name, (help_text, read) in sorted(self.gauges.items()):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge",
                      f"{name} {_num(read())}"]
        return "\n".join(lines) + "\n"
