"""Dynamic micro-batching: single-image requests that arrive together share one forward pass.

Like Triton's dynamic batcher: requests go into a bounded queue; one worker thread takes the
first waiting item, then waits at most ``max_delay_s`` for more, up to ``max_batch`` items,
and calls ``fn`` once on the whole batch. A full queue refuses at once (:class:`BusyError`,
the API's 503) instead of growing without bound; a request that stops waiting (its timeout)
cancels its future, and cancelled items are skipped.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

__all__ = ["BusyError", "MicroBatcher"]

_STOP = object()


class BusyError(RuntimeError):
    """The queue is full: try again later."""


class MicroBatcher:
    """Runs ``fn(list of inputs) -> list of outputs`` over batches of submitted inputs.

    ``on_batch(size)`` is called after every batch (metrics). The worker thread starts on the
    first :meth:`submit` and again after :meth:`close`.
    """

    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], *, max_batch: int,
                 max_delay_s: float, max_queue: int,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.fn, self.max_batch, self.max_delay_s = fn, max_batch, max_delay_s
        self.on_batch = on_batch
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0
        self.items = 0
        self.largest_batch = 0

    @property
    def depth(self) -> int:
        """Inputs waiting for the worker."""
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, x: Any) -> Future[Any]:
        """Queue ``x``; its future gets the output. BusyError when the queue is full."""
        self._start()
        future: Future[Any] = Future()
        try:
            self._queue.put_nowait((x, future))
        except queue.Full:
            raise BusyError(f"the encoder queue is full ({self._queue.maxsize} images "
                            "waiting); try again shortly") from None
        return future

    def _start(self) -> None:
        with self._lock:
            if not self.alive:
                self._thread = threading.Thread(target=self._run, name="hashlab-batcher",
                                                daemon=True)
                self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Finish the queued work and stop the worker."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            thread.join(timeout)

    def _collect(self, first: Any) -> tuple[list[Any], bool]:
        """``first`` plus whatever arrives within the delay, up to ``max_batch``."""
        batch, stop = [first], False
        deadline = time.monotonic() + self.max_delay_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 \
                    else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        return batch, stop

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._collect(first)
            live = [(x, f) for x, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                outputs = self.fn([x for x, _ in live])
                for (_, f), out in zip(live, outputs, strict=True):
                    f.set_result(out)
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
                for _, f in live:
                    if not f.done():
                        f.set_exception(exc)
            self.batches += 1
            self.items += len(live)
            self.largest_batch = max(self.largest_batch, len(live))
            if self.on_batch is not None:
                self.on_batch(len(live))
