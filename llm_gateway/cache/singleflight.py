"""Single-flight: identical requests in flight at once reach the vendor once (per process).

The first caller for a key becomes the *leader* and does the work; later callers with
the same key become *followers* and wait for the leader's outcome: the answer (as the
entry's bytes, so each follower gets its own copy), or the error, which each follower
raises as its own copy. A leader that ends with neither (its client went away) wakes
the followers with nothing; they try again and one of them leads.

Plain ``asyncio.Event`` instead of a shared ``Future``: no "exception was never
retrieved" noise when nobody followed.
"""

from __future__ import annotations

import asyncio


class Flight:
    __slots__ = ("key", "done", "value", "error", "waiters")

    def __init__(self, key: str) -> None:
        self.key = key
        self.done = asyncio.Event()
        self.value: bytes | None = None
        self.error: BaseException | None = None
        self.waiters = 0


class SingleFlight:
    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def join(self, key: str) -> tuple[Flight, bool]:
        """The flight for ``key`` and whether the caller leads it."""
        f = self._flights.get(key)
        if f is None:
            f = self._flights[key] = Flight(key)
            return f, True
        return f, False

    async def wait(self, f: Flight) -> None:
        f.waiters += 1
        try:
            await f.done.wait()
        finally:
            f.waiters -= 1

    def finish(self, f: Flight, value: bytes | None = None, error: BaseException | None = None) -> None:
        """End the flight (idempotent: the first outcome wins) and wake the followers."""
        if self._flights.get(f.key) is f:
            del self._flights[f.key]
        if not f.done.is_set():
            f.value, f.error = value, error
            f.done.set()


def copy_error(e: BaseException) -> BaseException:
    """A shallow copy, so followers never raise (and chain tracebacks onto) one shared object."""
    cls = type(e)
    try:
        new = cls.__new__(cls)
        new.__dict__.update(e.__dict__)
        new.args = e.args
        return new
    except Exception:  # an exotic exception type: share it rather than fail
        return e
