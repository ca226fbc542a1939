"""Run an asyncio server on its own event loop in a daemon thread, for synchronous callers.

``FakeBaiduServer.start_in_thread`` and ``stop_thread`` (and so ``with FakeBaiduServer():`` and
the pytest plugin's fixtures) are this runner around the server's ``start`` and ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any

__all__: list[str] = []  # FakeBaiduServer's thread; nothing public

AsyncStep = Callable[[], Coroutine[Any, Any, None]]


class ThreadRunner:
    """Runs ``start()`` on a new event loop in a daemon thread, then ``close()`` when stopped.

    Args:
        start: Starts the server on the running loop; may raise, e.g. ``OSError``.
        close: Stops it, on the same loop.
        name: The thread's name, also used in errors.
    """

    def __init__(self, start: AsyncStep, close: AsyncStep, *, name: str) -> None:
        self._start = start
        self._close = close
        self._name = name
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future[None] | None = None

    def start(self, timeout: float) -> None:
        """Start the thread and return once ``start()`` returned on it.

        Raises:
            RuntimeError: Already started, or ``start()`` did not finish within ``timeout``.
            BaseException: Whatever ``start()`` raised.
        """
        if self._thread is not None:
            raise RuntimeError(f"{self._name} can only be started once")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            with asyncio.Runner() as runner:
                try:
                    runner.run(self._start())
                except BaseException as exc:
                    failure.append(exc)
                    ready.set()
                    return
                self._loop = runner.get_loop()
                self._stop = self._loop.create_future()
                ready.set()
                runner.run(self._serve_until_stopped())

        thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread = thread
        thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"{self._name} did not start in time")
        if failure:
            thread.join()
            raise failure[0]

    async def _serve_until_stopped(self) -> None:
        assert self._stop is not None
        await self._stop
        await self._close()

    def stop(self, timeout: float) -> None:
        """Have the thread run ``close()``, and wait up to ``timeout`` for it. Idempotent."""
        thread, stop, loop = self._thread, self._stop, self._loop
        if thread is None:
            return
        if stop is not None and loop is not None and not loop.is_closed():

            def signal_stop() -> None:
                if not stop.done():
                    stop.set_result(None)

            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(signal_stop)
        thread.join(timeout)
