"""An object that lives in a child process, for tests that call llama.cpp: a crash there fails the test, not the run.

llama.cpp kernels can segfault on some CPUs (the AMX kernel on quantized weights did, inside the pytest process,
and took the whole run with it). So no test calls llama.cpp in the pytest process: it builds its engine here
and calls it over a pipe. A child that dies raises `ChildDied` with its signal in the calling test.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection
from typing import Any, Callable

from shared.lifecycle import describe_exit


class ChildDied(AssertionError):
    """The child process ended while it held the object (a crash in native code, most likely)."""


def _serve(factory: Callable[..., Any], args: tuple[Any, ...], connection: Connection) -> None:
    import faulthandler

    faulthandler.enable()  # the native stack of a crash goes to the test's captured stderr
    try:
        target = factory(*args)
    except Exception as exc:
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    connection.send(("ok", None))
    while (request := connection.recv()) is not None:
        function, call_args, kwargs = request
        try:
            connection.send(("ok", function(target, *call_args, **kwargs)))
        except Exception as exc:
            connection.send(("error", f"{type(exc).__name__}: {exc}"))


def _call_method(target: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    return getattr(target, name)(*args, **kwargs)


def _get_attribute(target: Any, name: str) -> Any:
    return getattr(target, name)


class ChildObject:
    """`factory(*args)` built in a spawned child; `call`, `get` and `apply` reach it there (arguments pickled)."""

    def __init__(self, factory: Callable[..., Any], *args: Any, timeout: float = 300.0) -> None:
        context = multiprocessing.get_context("spawn")  # fork would copy pytest's threads and state
        self._connection, child_end = context.Pipe()
        self._process = context.Process(target=_serve, args=(factory, args, child_end), daemon=True)
        self._process.start()
        child_end.close()
        self._timeout = timeout
        self._answer(f"building {getattr(factory, '__name__', factory)}")

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.apply(_call_method, method, *args, **kwargs)

    def get(self, attribute: str) -> Any:
        return self.apply(_get_attribute, attribute)

    def apply(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`function(target, *args, **kwargs)` in the child; `function` must be importable (module level)."""
        self._connection.send((function, args, kwargs))
        return self._answer(getattr(function, "__name__", "call"))

    def _answer(self, what: str) -> Any:
        try:
            if not self._connection.poll(self._timeout):
                raise ChildDied(f"no answer to {what} within {self._timeout:g}s")
            status, value = self._connection.recv()
        except (EOFError, ConnectionResetError):
            self._process.join(timeout=5)
            code = self._process.exitcode
            raise ChildDied(f"the child process {describe_exit(code) if code is not None else 'vanished'} "
                            f"during {what}") from None
        if status == "error":
            raise RuntimeError(f"{what} failed in the child: {value}")
        return value

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._connection.send(None)
            except (BrokenPipeError, OSError):
                pass
            self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._connection.close()
