"""Dynamic batching of single-image predictions: requests that arrive while the network is busy
share its next forward pass.

On a CPU one forward pass of 16 images costs little more than one of a single image, so under a
crowd the per-request cost of the network falls with the queue; alone, a request waits for nobody
(no timer, no batching thread). The requests keep their own threads, so a bad image fails only its
own request, before it ever reaches the batch.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Sequence

import torch


class _Slot:
    __slots__ = ("x", "result", "error", "done")

    def __init__(self, x: torch.Tensor):
        self.x, self.result, self.error, self.done = x, None, None, False


class Batcher:
    """`batcher(x)` for one input (1, ...) returns `fn(batch)[i]`, its row of a batched call.

    `fn` takes a batch (B, ...) and returns B per-item results. Whoever holds the lock runs `fn` on
    every input waiting at that moment (at most `max_batch`), so later callers usually find their
    result ready when the lock comes to them.
    """

    def __init__(self, fn: Callable[[torch.Tensor], Sequence], max_batch: int = 32):
        self.fn, self.max_batch = fn, max_batch
        self._waiting: list[_Slot] = []
        self._waiting_lock = threading.Lock()     # guards _waiting only: held for microseconds
        self._run_lock = threading.Lock()         # one forward pass at a time
        self.batch_sizes: deque[int] = deque(maxlen=1000)   # recent batch sizes, for bench/ and tests

    def __call__(self, x: torch.Tensor):
        slot = _Slot(x)
        with self._waiting_lock:
            self._waiting.append(slot)
        while not slot.done:
            with self._run_lock:
                if not slot.done:
                    self._run_waiting()
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _run_waiting(self) -> None:
        with self._waiting_lock:
            batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
        if not batch:
            return
        try:
            results = self.fn(torch.cat([s.x for s in batch]))
            for s, r in zip(batch, results, strict=True):
                s.result = r
        except Exception as e:  # every caller of this batch gets the error, none waits forever
            for s in batch:
                s.error = e
        finally:
            for s in batch:
                s.done = True
            self.batch_sizes.append(len(batch))
