# cython: language_level=3
"""Cython fast path: batches, fan-out, and the per-value iterator.

Same classes and behaviour as ``sabot/_cython/channels_py.py`` (read its module
docstring for the design). What is faster here:

* ``FanOut.append`` / ``Subscriber.take`` are typed C loops.
* The iterators are awaitables whose ``am_send`` slot hands a value back as
  ``PYGEN_RETURN``: ``async for value in stream`` costs no coroutine, no frame
  and no ``StopIteration`` per value; it only suspends (yielding a future to
  the event loop's Task) when the subscriber's queue is empty.
"""
import logging
import time
import weakref
from time import monotonic as _monotonic
from collections import deque

from cpython.ref cimport PyObject, Py_INCREF

from ..exceptions import ChannelClosed
from ..types import Event

_logger = logging.getLogger("sabot.channels")

__all__ = ["Batch", "FanOut", "Subscriber", "ValueIterator", "BatchIterator",
           "EventIterator"]

cdef extern from *:
    """
    typedef PySendResult (*__sabot_sendfunc)(PyObject *, PyObject *, PyObject **);
    static int __sabot_install_am_send(PyObject *type, void *func) {
        PyTypeObject *t = (PyTypeObject *)type;
        if (t->tp_as_async == NULL) {
            PyErr_SetString(PyExc_TypeError, "type has no async slots");
            return -1;
        }
        t->tp_as_async->am_send = (__sabot_sendfunc)func;
        PyType_Modified(t);
        return 0;
    }
    """
    int __sabot_install_am_send(object type, void *func) except -1


cdef class Batch:
    """Values (a list or a ``pyarrow.RecordBatch``) with envelope and ack count."""

    cdef public object payload
    cdef public object keys
    cdef public object headers
    cdef public object timestamps
    cdef public object positions
    cdef public double timestamp
    cdef public object on_done
    cdef public object on_abandon
    cdef public double published_at
    cdef public Py_ssize_t nbytes
    cdef Py_ssize_t _refs
    cdef list _rows
    cdef bint _done
    cdef bint _abandoned
    cdef list _upstream
    cdef object __weakref__

    def __init__(self, payload, keys=None, headers=None, timestamps=None,
                 positions=None, on_done=None, timestamp=None, nbytes=None):
        self.payload = payload
        # Bytes the payload holds, for the channel's byte bound: a RecordBatch
        # knows its size; a list counts 0 unless the producer says (a fetch).
        if nbytes is not None:
            self.nbytes = nbytes
        elif type(payload) is list:
            self.nbytes = 0
        else:
            self.nbytes = getattr(payload, "nbytes", 0)
        self.keys = keys
        self.headers = headers
        self.timestamps = timestamps
        self.positions = positions
        self.on_done = on_done
        self.on_abandon = None
        self.timestamp = time.time() if timestamp is None else timestamp
        self._refs = 0
        self._done = False
        self._abandoned = False
        self._upstream = None
        self.published_at = 0.0
        self._rows = payload if type(payload) is list else None

    def __len__(self):
        return len(self.payload)

    def __repr__(self):
        kind = "list" if type(self.payload) is list else type(self.payload).__name__
        return f"<Batch {kind} len={len(self)} refs={self._refs} done={self._done}>"

    cpdef list rows(self):
        """The values as Python objects (RecordBatch rows become dicts, once)."""
        if self._rows is None:
            self._rows = self.payload.to_pylist()
        return self._rows

    def event(self, Py_ssize_t i):
        """The ``i``-th value with its key, headers, timestamp and position."""
        return Event(
            None if self.keys is None else self.keys[i],
            self.rows()[i],
            None if self.headers is None else self.headers[i],
            self.timestamp if self.timestamps is None else self.timestamps[i],
            None if self.positions is None else self.positions[i],
        )

    cpdef acquire(self, Py_ssize_t n=1):
        """Count ``n`` more holders; ``on_done`` waits for all of them."""
        if self._done:
            raise RuntimeError("acquire() on a batch that is already done")
        self._refs += n

    cpdef release(self):
        """One holder is finished; the last one fires ``on_done``."""
        self._refs -= 1
        if self._refs <= 0 and not self._done and not self._abandoned:
            self._finish()

    cpdef abandon(self):
        """One holder gives up without finishing: ``on_done`` will never fire.

        Used when an agent stops or crashes with the batch in hand, so a
        transport never commits values that were not processed.
        """
        cdef bint first = not self._abandoned
        self._refs -= 1
        self._abandoned = True
        if first and self.on_abandon is not None:
            try:
                self.on_abandon(self)
            except Exception:
                _logger.exception("on_abandon callback of %r failed", self)
        if self._upstream is not None:
            # What this batch was sent on behalf of is not finished either.
            upstream, self._upstream = self._upstream, None
            for batch in upstream:
                batch.abandon()

    cpdef _finish(self):
        self._done = True
        if self.on_done is not None:
            try:
                self.on_done(self)
            except Exception:
                # A failing ack callback must not look like the agent failing
                # on a value (it runs inside the reader's __anext__).
                _logger.exception("on_done callback of %r failed", self)
        if self._upstream is not None:
            upstream, self._upstream = self._upstream, None
            for batch in upstream:
                (<Batch>batch).release()

    cpdef link(self, Batch upstream):
        """Hold ``upstream`` until this batch is done (abandon it if this is).

        An agent forwarding a value from a transport batch to a memory channel
        links them, so the offset is committed only once the value has been
        processed downstream, not merely queued.
        """
        upstream.acquire()
        if self._upstream is None:
            self._upstream = [upstream]
        else:
            self._upstream.append(upstream)

    @property
    def tracked(self):
        """True when finishing this batch acknowledges something (a callback or a link)."""
        return self.on_done is not None or self._upstream is not None

    @property
    def done(self):
        """True once every holder released the batch."""
        return self._done

    @property
    def abandoned(self):
        """True when a holder gave up on the batch (it will never be done)."""
        return self._abandoned

    @property
    def refs(self):
        """How many holders still hold the batch."""
        return self._refs

    cdef inline void _append(self, object value, object key, object headers):
        cdef list payload = <list>self.payload
        cdef Py_ssize_t n
        if self.keys is not None or key is not None or headers is not None:
            n = len(payload)
            if self.keys is None:
                self.keys = [None] * n
                self.headers = [None] * n
            self.keys.append(key)
            self.headers.append(headers)
        payload.append(value)


cdef class _SubscriberState:
    """One subscriber's queue, positions and waiters; owned by the FanOut."""

    cdef object queue
    cdef Py_ssize_t pos
    cdef Py_ssize_t bpos
    cdef Py_ssize_t nbpos
    cdef list inflight
    cdef list waiters
    cdef object ref
    cdef bint active

    def __init__(self, Py_ssize_t pos, Py_ssize_t bpos=0, Py_ssize_t nbpos=0):
        self.queue = deque()
        self.pos = pos
        self.bpos = bpos
        self.nbpos = nbpos
        self.inflight = []
        self.waiters = []
        self.ref = None
        self.active = True

    cdef void wake(self):
        cdef list waiters = self.waiters
        if waiters:
            self.waiters = []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)


cdef class FanOut:
    """The core of one channel: subscribers, open batch, backpressure.

    Bounds: see the twin's docstring (``channels_py.FanOut``).
    """

    cdef public Py_ssize_t maxsize
    cdef public Py_ssize_t max_batches
    cdef public Py_ssize_t max_bytes
    cdef public Py_ssize_t batch_size
    cdef public Py_ssize_t total
    cdef public Py_ssize_t total_batches
    cdef public Py_ssize_t total_bytes
    cdef public bint closed
    cdef list _states
    cdef Batch _open
    cdef Batch _last
    cdef Py_ssize_t _min_pos
    cdef Py_ssize_t _min_bpos
    cdef Py_ssize_t _min_nbpos
    cdef list _cap_waiters
    cdef object _loop

    def __init__(self, maxsize=4096, batch_size=1000, loop=None, max_batches=None,
                 max_bytes=64 * 1024 * 1024):
        if max_batches is None:
            max_batches = maxsize
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        if max_batches < 1 or max_bytes < 1:
            raise ValueError("max_batches and max_bytes must be at least 1")
        self.maxsize = maxsize
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self.batch_size = max(1, min(batch_size, maxsize))
        self.total = 0
        self.total_batches = 0
        self.total_bytes = 0
        self.closed = False
        self._states = []
        self._open = None
        self._last = None
        self._min_pos = 0
        self._min_bpos = 0
        self._min_nbpos = 0
        self._cap_waiters = []
        self._loop = loop

    # -- subscribers -------------------------------------------------------
    def subscribe(self):
        """A new subscriber that receives everything sent from now on."""
        if self.closed:
            raise ChannelClosed("channel is closed")
        # Seal the open batch: the newcomer must not see values sent before it.
        self._open = None
        state = _SubscriberState(self.total, self.total_batches, self.total_bytes)
        handle = Subscriber(self, state)
        state.ref = weakref.ref(handle, _DropCallback(self, state))
        self._states.append(state)
        return handle

    @property
    def subscriber_count(self):
        """How many live subscribers the channel has."""
        return len(self._states)

    cpdef _drop(self, _SubscriberState state, bint abandon=False):
        if not state.active:
            return
        state.active = False
        try:
            self._states.remove(state)
        except ValueError:
            pass
        queue, inflight = state.queue, state.inflight
        state.queue, state.inflight = deque(), []
        for batch in queue:
            if batch is self._open:
                self._open = None
            if abandon:
                (<Batch>batch).abandon()
            else:
                (<Batch>batch).release()
        for batch in inflight:
            if abandon:
                (<Batch>batch).abandon()
            else:
                (<Batch>batch).release()
        state.wake()
        self._check_capacity()

    # -- producing ---------------------------------------------------------
    cpdef bint append(self, object value, object key=None, object headers=None) except -1:
        """Add one value; returns True when the caller must ``wait_capacity``."""
        cdef Batch batch
        if self.closed:
            raise ChannelClosed("channel is closed")
        batch = self._open
        if batch is None:
            batch = Batch([])
            self._push(batch)
            if self._states:
                self._open = batch
        batch._append(value, key, headers)
        self._last = batch
        self.total += 1
        if len(<list>batch.payload) >= self.batch_size:
            self._open = None
        return self._maybe_over()

    cpdef bint append_linked(self, object value, list sources) except -1:
        """``append`` on behalf of ``sources``: they stay held until the value's batch is done."""
        cdef bint wait = self.append(value)
        cdef Batch batch = self._last
        if batch is not None and not batch._done:
            for source in sources:
                batch.link(source)
        return wait

    cpdef bint publish(self, Batch batch) except -1:
        """Hand a whole batch to every subscriber; True means wait for capacity."""
        if self.closed:
            raise ChannelClosed("channel is closed")
        self._open = None
        self._push(batch)
        self.total += len(batch)
        self.total_bytes += batch.nbytes
        return self._maybe_over()

    cdef int _push(self, Batch batch) except -1:
        cdef list states = self._states
        cdef Py_ssize_t n = len(states)
        cdef _SubscriberState state
        self.total_batches += 1
        if n == 0:
            batch._finish()
            return 0
        batch.published_at = _monotonic()
        batch.acquire(n)
        # A copy: waking a reader allocates, a collection may run a weakref
        # callback, and _drop would change the list under this loop.
        for state in list(states):
            if not state.active:
                batch.release()  # dropped after the acquire: not its batch
                continue
            state.queue.append(batch)
            if state.waiters:
                state.wake()
        return 0

    cdef inline bint _maybe_over(self):
        # Cheap and possibly stale (the minimums are refreshed by
        # _check_capacity): False means surely under every bound.
        return (self.total - self._min_pos >= self.maxsize
                or self.total_batches - self._min_bpos >= self.max_batches
                or self.total_bytes - self._min_nbpos >= self.max_bytes)

    cdef inline bint _state_over(self, _SubscriberState state):
        return bool(state.queue) and (
            self.total - state.pos >= self.maxsize
            or self.total_batches - state.bpos >= self.max_batches
            or self.total_bytes - state.nbpos >= self.max_bytes)

    cpdef bint over_capacity(self):
        """True when a subscriber is past a bound with a batch still queued for it."""
        cdef _SubscriberState state
        if not self._maybe_over():
            return False
        for state in self._states:
            if self._state_over(state):
                return True
        return False

    def lag(self):
        """Values sent and not yet released by the slowest subscriber."""
        if not self._states:
            return 0
        return self.total - min([(<_SubscriberState>s).pos for s in self._states])

    cpdef _check_capacity(self):
        cdef list states = self._states
        cdef _SubscriberState state
        cdef Py_ssize_t low = self.total
        cdef Py_ssize_t blow = self.total_batches
        cdef Py_ssize_t nblow = self.total_bytes
        for state in states:
            if state.pos < low:
                low = state.pos
            if state.bpos < blow:
                blow = state.bpos
            if state.nbpos < nblow:
                nblow = state.nbpos
        self._min_pos = low
        self._min_bpos = blow
        self._min_nbpos = nblow
        if self._cap_waiters and not self.over_capacity():
            waiters, self._cap_waiters = self._cap_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def wait_capacity(self):
        """Sleep while a subscriber is past a bound with a batch queued (backpressure)."""
        self._check_capacity()
        while self.over_capacity() and not self.closed:
            fut = self._get_loop().create_future()
            self._cap_waiters.append(fut)
            await fut
            self._check_capacity()
        if self.closed:
            raise ChannelClosed("channel closed while waiting for capacity")

    def _get_loop(self):
        if self._loop is None:
            import asyncio
            self._loop = asyncio.get_running_loop()
        return self._loop

    def close(self):
        """No more values: readers drain what is queued, then stop."""
        self.closed = True
        self._open = None
        for state in list(self._states):
            (<_SubscriberState>state).wake()
        waiters, self._cap_waiters = self._cap_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


cdef class _DropCallback:
    """Weakref callback that drops a collected subscriber from its FanOut."""

    cdef object fanout
    cdef object state

    def __init__(self, fanout, state):
        self.fanout = fanout
        self.state = state

    def __call__(self, ref):
        fanout = self.fanout
        if fanout is not None:
            self.fanout = None
            (<FanOut>fanout)._drop(self.state)


cdef class Subscriber:
    """One reader of a channel (held weakly by the channel)."""

    cdef FanOut _fanout
    cdef _SubscriberState _state
    cdef public object observer
    cdef public object on_wait
    cdef object __weakref__

    def __init__(self, FanOut fanout, _SubscriberState state):
        self._fanout = fanout
        self._state = state
        self.observer = None
        self.on_wait = None

    cpdef object take(self):
        """The next whole batch, or None; taking the open batch seals it."""
        cdef _SubscriberState state = self._state
        cdef Batch batch
        cdef FanOut fanout = self._fanout
        if state.queue:
            batch = state.queue.popleft()
            if batch is fanout._open:
                fanout._open = None
            state.inflight.append(batch)
            if fanout._cap_waiters and not state.queue:
                # Nothing queued any more: a waiting sender may go on.
                fanout._check_capacity()
            return batch
        return None

    cpdef done(self, Batch batch):
        """The reader moved past ``batch``: count it released."""
        cdef _SubscriberState state = self._state
        cdef list inflight = state.inflight
        if inflight and inflight[0] is batch:
            del inflight[0]
        else:
            try:
                inflight.remove(batch)
            except ValueError:
                return  # already released (dropped subscriber)
        state.pos += len(batch)
        state.bpos += 1
        state.nbpos += batch.nbytes
        batch.release()
        if self._fanout._cap_waiters:
            self._fanout._check_capacity()
        if self.observer is not None:
            self.observer(batch)

    def waiter(self):
        """A future that completes when a batch arrives or the channel closes."""
        fut = self._fanout._get_loop().create_future()
        self._state.waiters.append(fut)
        if self.on_wait is not None:
            self.on_wait()
        return fut

    cdef inline bint _exhausted(self):
        return (self._fanout.closed or not self._state.active) and not self._state.queue

    def discard_waiter(self, fut):
        """Forget a waiter that was cancelled or timed out."""
        try:
            self._state.waiters.remove(fut)
        except ValueError:
            pass

    @property
    def exhausted(self):
        """True when the channel is closed and nothing is left to take."""
        return self._exhausted()

    @property
    def pending(self):
        """Batches queued and not yet taken."""
        return len(self._state.queue)

    @property
    def lag(self):
        """Values sent to this subscriber and not yet released."""
        return self._fanout.total - self._state.pos

    def close(self):
        """Unsubscribe now and stop receiving.

        What it still held is abandoned, not acknowledged: a transport will
        deliver it again after a restart. (A subscriber that is garbage
        collected instead releases what it held: its owner dropped it.)
        """
        self._fanout._drop(self._state, True)

    def values(self):
        """A per-value async iterator (the agent's ``async for``)."""
        return ValueIterator(self)

    def batches(self):
        """An async iterator of whole batches."""
        return BatchIterator(self)

    def events(self):
        """An async iterator of ``Event`` (key, value, headers, ...)."""
        return EventIterator(self)


cdef class _IteratorBase:
    """Shared cursor logic: hold one batch, release it when moving past it.

    Subclasses implement ``_step``: return the next item, or return a future
    (after storing it in ``_fut``) when the event loop must wait.
    """

    cdef Subscriber _sub
    cdef Batch _batch
    cdef list _rows
    cdef Py_ssize_t _i
    cdef Py_ssize_t _n
    cdef object _fut

    def __init__(self, Subscriber sub):
        self._sub = sub
        self._batch = None
        self._rows = None
        self._i = 0
        self._n = 0
        self._fut = None

    def __aiter__(self):
        return self

    def __anext__(self):
        if self._fut is not None:
            # Like an async generator: one awaiter at a time. Two would share
            # the waiter future and cancel each other's waits.
            raise RuntimeError("__anext__(): the iterator is already awaited by another task")
        return self

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        # Used only when am_send is bypassed (e.g. under a tracer).
        cdef object item = self._step()
        if self._fut is not None:
            return self._fut
        raise StopIteration(item)

    def send(self, value):
        cdef object item = self._step()
        if self._fut is not None:
            return self._fut
        raise StopIteration(item)

    def throw(self, typ, val=None, tb=None):
        fut, self._fut = self._fut, None
        if fut is not None:
            self._sub.discard_waiter(fut)
            if not fut.done():
                fut.cancel()
        if val is None:
            if isinstance(typ, BaseException):
                raise typ
            raise typ()
        raise val

    def close(self):
        fut, self._fut = self._fut, None
        if fut is not None:
            self._sub.discard_waiter(fut)

    @property
    def subscriber(self):
        return self._sub

    @property
    def current_batch(self):
        """The batch the last item came from (held until the next request)."""
        return self._batch

    @property
    def current_index(self):
        """Index in ``current_batch`` of the last item returned."""
        return self._i - 1

    def current_value(self):
        """The last value returned (None before the first)."""
        if self._batch is None or self._i == 0:
            return None
        return self._rows[self._i - 1]

    def current_position(self):
        """Transport position of the last value returned, if known."""
        batch = self._batch
        if batch is None or self._i == 0 or batch.positions is None:
            return None
        return batch.positions[self._i - 1]

    cpdef release_current(self):
        """Release the held batch now (the reader is finished with it)."""
        cdef Batch batch = self._batch
        if batch is not None:
            self._batch = None
            self._rows = None
            self._i = self._n = 0
            self._sub.done(batch)

    cdef bint _advance(self) except -1:
        cdef object taken
        self.release_current()
        taken = self._sub.take()
        if taken is None:
            return False
        self._batch = <Batch>taken
        self._rows = self._batch.rows()
        self._i = 0
        self._n = len(self._rows)
        return True

    def poll(self, empty=None):
        """The next value without waiting, or ``empty`` when it would wait."""
        cdef Py_ssize_t i
        while True:
            i = self._i
            if i < self._n:
                self._i = i + 1
                return self._rows[i]
            if not self._advance():
                return empty

    cdef object _wait(self):
        if self._sub._exhausted():
            self.release_current()
            raise StopAsyncIteration
        fut = self._sub.waiter()
        fut._asyncio_future_blocking = True
        self._fut = fut
        return fut

    cdef object _step(self):
        raise NotImplementedError


cdef class ValueIterator(_IteratorBase):
    """``async for value in stream``: walks each batch without suspending."""

    cdef object _step(self):
        cdef Py_ssize_t i
        self._fut = None
        while True:
            i = self._i
            if i < self._n:
                self._i = i + 1
                return self._rows[i]
            if not self._advance():
                return self._wait()


cdef class EventIterator(_IteratorBase):
    """``stream.events()``: like ``ValueIterator`` but yields ``Event``."""

    cdef object _step(self):
        cdef Py_ssize_t i
        self._fut = None
        while True:
            i = self._i
            if i < self._n:
                self._i = i + 1
                return self._batch.event(i)
            if not self._advance():
                return self._wait()


cdef class BatchIterator(_IteratorBase):
    """``stream.batches()``: yields each batch as it is (no copy)."""

    cdef object _step(self):
        cdef object taken
        self._fut = None
        self.release_current()
        taken = self._sub.take()
        if taken is None:
            return self._wait()
        self._batch = <Batch>taken
        # The batch counts as consumed whole; current_value() is its payload
        # so crash reports name the failing batch.
        self._rows = [self._batch.payload]
        self._i = self._n = 1
        return taken


cdef int _iterator_am_send(PyObject *obj, PyObject *arg, PyObject **result) except -1:
    # PYGEN_RETURN (0) hands the item back without raising StopIteration;
    # PYGEN_NEXT (1) yields the future to the Task; -1 is PYGEN_ERROR.
    cdef _IteratorBase self = <_IteratorBase>obj
    cdef object item = self._step()
    Py_INCREF(item)
    result[0] = <PyObject *>item
    if self._fut is not None:
        return 1
    return 0


__sabot_install_am_send(ValueIterator, <void *>_iterator_am_send)
__sabot_install_am_send(EventIterator, <void *>_iterator_am_send)
__sabot_install_am_send(BatchIterator, <void *>_iterator_am_send)
