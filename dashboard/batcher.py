"""Dynamic batching of single-image predictions: requests that arrive while the network is busy
share its next forward pass.

On a CPU one forward pass of 16 images costs little more than one of a single image, so under a
crowd the per-request cost of the network falls with the queue; alone, a request waits for nobody
(no timer). One thread of its own runs the network, so the callers do not take turns at a lock:
a thread blocks on its answer (`batcher(x)`), a coroutine awaits it on its event loop
(`await batcher.run(x)`) without holding a worker thread. Under a crowd, the threads that took
turns at a lock handed Python's lock to each other hundreds of times per request
(bench/results/server_profile.md). A bad image fails only its own request, before it ever reaches
the batch.
"""
from __future__ import annotations

import asyncio
import threading
from collections import deque
from concurrent.futures import Future
from typing import Callable, Sequence

import torch


class Batcher:
    """`batcher(x)` for one input (1, ...) returns `fn(batch)[i]`, its row of a batched call.

    `fn` takes a batch (B, ...) and returns B per-item results. An input may also be a tuple of
    tensors (1, ...) (an image and what else describes it): each is batched along its first
    dimension and `fn` takes them as its arguments. The batcher's thread runs `fn` on
    every input waiting when it is free (at most `max_batch`), then on those that came meanwhile.
    """

    def __init__(self, fn: Callable[[torch.Tensor], Sequence], max_batch: int = 32, name: str = "batcher"):
        self.fn, self.max_batch = fn, max_batch
        self._waiting: deque[tuple[torch.Tensor | tuple[torch.Tensor, ...], Future]] = deque()
        self._arrived = threading.Condition()
        self.batch_sizes: deque[int] = deque(maxlen=1000)   # recent batch sizes, for bench/ and tests
        # Started by the first submit, not here: building the app (importing app.py) starts no thread.
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    def submit(self, x: torch.Tensor | tuple[torch.Tensor, ...]) -> Future:
        """The future row of `x` in a coming batch."""
        answer: Future = Future()
        with self._arrived:
            if not self._thread.is_alive():
                self._thread.start()
            self._waiting.append((x, answer))
            self._arrived.notify()
        return answer

    def __call__(self, x: torch.Tensor | tuple[torch.Tensor, ...]):
        return self.submit(x).result()

    async def run(self, x: torch.Tensor | tuple[torch.Tensor, ...]):
        """`batcher(x)` for a coroutine: the event loop serves others while the batch runs."""
        return await asyncio.wrap_future(self.submit(x))

    def _serve(self) -> None:
        while True:
            with self._arrived:
                while not self._waiting:
                    self._arrived.wait()
                batch = [self._waiting.popleft() for _ in range(min(len(self._waiting), self.max_batch))]
            self._run(batch)

    def _run(self, batch: list[tuple[torch.Tensor | tuple[torch.Tensor, ...], Future]]) -> None:
        try:
            inputs = [x if isinstance(x, tuple) else (x,) for x, _ in batch]
            results = self.fn(*(torch.cat(part) for part in zip(*inputs)))
            if len(results) != len(batch):
                raise RuntimeError(f"the batch function returned {len(results)} rows for {len(batch)} inputs")
            for (_, answer), r in zip(batch, results):
                answer.set_result(r)
        except Exception as e:  # every caller of this batch gets the error, none waits forever
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(e)
        finally:
            self.batch_sizes.append(len(batch))
