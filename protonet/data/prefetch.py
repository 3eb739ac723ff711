"""Background prefetching of batches, as Caffe's BasePrefetchingDataLayer does with its thread.

A :class:`Prefetcher` runs ``load_batch()`` on a daemon thread and keeps up to ``depth``
finished batches in a queue; ``get()`` hands them out in order. The thread holds only a weak
reference to the owner of ``load_batch``, so dropping the layer (or the net holding it) lets it
be collected; collection, ``close()`` or interpreter exit stop the thread. A ProtonetError (or
any exception) raised while loading ends the thread and is re-raised by every later ``get()``
in the caller's thread.
"""

import queue
import threading
import weakref

_POLL_SECONDS = 0.1


def _run(load_ref, batches, stop):
    """Thread body: load batches until stopped or the owner is gone."""
    while not stop.is_set():
        load = load_ref()
        if load is None:
            return
        try:
            item = (load(), None)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, not swallowed
            item = (None, err)
        del load
        while not stop.is_set():
            try:
                batches.put(item, timeout=_POLL_SECONDS)
                break
            except queue.Full:
                continue
        if item[1] is not None:
            return


def _stop(stop):
    stop.set()


class Prefetcher:
    """Loads batches ahead on a background thread; ``depth`` 0 loads synchronously in ``get()``.

    ``load_batch`` must be a bound method; the prefetcher keeps only a weak reference to it.
    """

    def __init__(self, load_batch, depth, name="prefetch"):
        self._load_ref = weakref.WeakMethod(load_batch)
        self._depth = int(depth)
        self._stop = threading.Event()
        self._batches = queue.Queue(maxsize=max(self._depth, 1))
        self._thread = None
        self._error = None
        # Stop the thread when the layer is garbage-collected.
        self._finalizer = weakref.finalize(load_batch.__self__, _stop, self._stop)
        if self._depth > 0:
            self._thread = threading.Thread(target=_run, name=name, daemon=True,
                                            args=(self._load_ref, self._batches, self._stop))
            self._thread.start()

    def get(self):
        """The next batch, in load order; re-raises a loading error."""
        if self._thread is None:
            return self._load_ref()()
        if self._error is not None:
            raise self._error
        while True:
            try:
                batch, err = self._batches.get(timeout=_POLL_SECONDS)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._batches.empty():
                    raise RuntimeError("the prefetch thread has stopped") from None
        if err is not None:
            self._error = err
            raise err
        return batch

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout=5.0):
        """Stop the thread and wait for it (it finishes the batch it is loading).

        ``timeout`` None waits however long that batch takes, so that the caller may then touch
        the loader's state (a data layer restoring its position does).
        """
        self._stop.set()
        self._finalizer.detach()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
