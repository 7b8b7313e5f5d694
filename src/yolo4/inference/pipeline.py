"""A small stage pipeline for video: decoding, pre-processing, the network, post-processing and
drawing each in its own thread, connected by bounded queues, so that the network never waits
for the decoder or the encoder (darknet's Python loop, one stage after another, kept a GPU
20 % busy: AlexeyAB/darknet #5255).

    pipe = Pipeline([detector.prepare_frames, detector.forward, detector.finish, draw])
    for drawn in pipe.run(batches_of_frames):    # results in input order
        writer.write(drawn)

Threads suffice: OpenCV's decode/resize/encode and PyTorch's kernels release the GIL. Each
stage runs in one thread, so items keep their order and a stateful stage (a tracker) sees
them in sequence. A stage's exception stops the pipeline and is raised from `run` in the
caller's thread; leaving the loop early (break, Ctrl-C) stops every thread. `threaded=False`
runs the same stages one after another in the caller's thread (the baseline to compare with).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

Stage = Callable[[Any], Any]
_END = object()


def batched(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    """Lists of `n` consecutive items (the last one shorter)."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class Pipeline:
    """Run `stages` (functions item -> item) over a stream; see the module docstring.

    Args:
        stages: applied in order; the first receives the items of the source.
        threaded: one thread for the source and one per stage (else all inline).
        queue_size: items waiting between two stages at most (bounds memory and latency).
    """

    def __init__(self, stages: Sequence[Stage], threaded: bool = True, queue_size: int = 2):
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self.stages, self.threaded, self.queue_size = list(stages), threaded, max(1, queue_size)

    def run(self, source: Iterable[Any]) -> Iterator[Any]:
        """The outputs of the last stage, in input order."""
        if not self.threaded:
            for item in source:
                for stage in self.stages:
                    item = stage(item)
                yield item
            return
        stop = threading.Event()
        queues: list[queue.Queue[Any]] = [queue.Queue(self.queue_size) for _ in range(len(self.stages) + 1)]

        def put(q: queue.Queue, item: Any) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def get(q: queue.Queue) -> Any:
            while not stop.is_set():
                try:
                    return q.get(timeout=0.1)
                except queue.Empty:
                    continue
            return _END

        def feed() -> None:
            try:
                for item in source:
                    if not put(queues[0], item):
                        return
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                put(queues[0], _Failed(e))
                return
            put(queues[0], _END)

        def work(stage: Stage, inbox: queue.Queue, outbox: queue.Queue) -> None:
            while True:
                item = get(inbox)
                if item is _END or isinstance(item, _Failed):
                    put(outbox, item)
                    return
                try:
                    out = stage(item)
                except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                    put(outbox, _Failed(e))
                    return
                if not put(outbox, out):
                    return

        threads = [threading.Thread(target=feed, name="pipeline-source", daemon=True)]
        for i, stage in enumerate(self.stages):
            name = f"pipeline-{getattr(stage, '__name__', i)}"
            threads.append(
                threading.Thread(target=work, args=(stage, queues[i], queues[i + 1]), name=name, daemon=True)
            )
        for t in threads:
            t.start()
        try:
            while True:
                item = get(queues[-1])
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=5.0)
