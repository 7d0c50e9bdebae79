"""Guard the message boundary: a malformed task message is dead-lettered, never fatal.

Celery builds a task request in the worker's main process; a message whose
body decodes but has the wrong shape (``{"hello": 1}`` instead of
``(args, kwargs, embed)``) raises there, and the worker exits with
"Unrecoverable error" — then its restart receives the same message again. A
consumer bootstep wraps every task strategy: the body is decoded and checked
(a 3-item sequence, args a list, kwargs a dict, arguments that bind to the
task's signature) before Celery sees it; a message that fails is written to
the dead-letter stream with its reason and raw body, then acked.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery, bootsteps
from kombu.exceptions import DecodeError

from scheduler.model import DeadLetter
from stores.protocols import StateStore

log = logging.getLogger(__name__)

Strategy = Callable[..., Any]
#: The store dead letters go to: the worker's Runtime's, looked up when one is written.
StoreOf = Callable[[], StateStore]
#: What a strategy raises on a message of the wrong shape (seen: ValueError on unpacking).
_SHAPE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError)


def shape_problem(body: Any, signature: inspect.Signature | None) -> str | None:
    """Why a decoded protocol-2 body cannot be a call of the task, or None when it can."""
    if not isinstance(body, list | tuple) or len(body) != 3:
        return f"body is {type(body).__name__}, not (args, kwargs, embed)"
    args, kwargs, embed = body
    if not isinstance(args, list | tuple):
        return f"args is {type(args).__name__}, not a list"
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        return f"kwargs is {type(kwargs).__name__}, not a dict of names"
    if embed is not None and not isinstance(embed, dict):
        return f"embed is {type(embed).__name__}, not a dict"
    if signature is not None:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            return f"arguments do not fit the task: {exc}"
    return None


def _signature(task: Any) -> inspect.Signature | None:
    try:
        sig = inspect.signature(task.run)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    # A bound task's run() still lists ``self`` when Celery wraps it unbound.
    if getattr(task, "bind", False) and params and params[0].name == "self":
        sig = sig.replace(parameters=params[1:])
    return sig


def guard(
    name: str, handler: Strategy, signature: inspect.Signature | None, store_of: StoreOf
) -> Strategy:
    def guarded(message: Any, body: Any, *args: Any, **kwargs: Any) -> Any:
        problem: str | None = None
        if body is None:  # protocol 2: Celery decodes the body later, in the pool
            try:
                problem = shape_problem(message.decode(), signature)
            except DecodeError as exc:
                problem = f"body does not decode: {exc}"
        if problem is None:
            try:
                return handler(message, body, *args, **kwargs)
            except _SHAPE_ERRORS as exc:
                problem = f"request could not be built: {exc!r}"
        _dead_letter(store_of(), message, name, problem)
        return None

    guarded.__wrapped__ = handler  # type: ignore[attr-defined]
    return guarded


def _dead_letter(
    store: StateStore, message: Any, task: str, problem: str, ack: bool = True
) -> bool:
    raw = message.body if isinstance(message.body, bytes) else repr(message.body).encode()
    letter = DeadLetter("malformed_message", problem, raw, task, time.time(), 0)
    try:
        store.add_dead_letters([letter])
    except redis.RedisError as exc:
        # Left unacked: the broker delivers it again once Redis is back.
        log.warning("malformed %s message not dead-lettered yet: %s", task, exc)
        return False
    log.warning("malformed %s message dead-lettered: %s", task, problem)
    if ack:
        message.ack()
    return True


def _keep_then(what: str, default: Callable[..., Any], store_of: StoreOf) -> Callable[..., Any]:
    """Celery's handler for messages it cannot route, after a copy goes to the dead letters."""

    def handler(body: Any, message: Any, *rest: Any) -> Any:
        task = (getattr(message, "headers", None) or {}).get("task") or "unknown"
        detail = f"{what}: {rest[0]!r}" if rest else what
        if _dead_letter(store_of(), message, str(task), detail, ack=False):
            return default(body, message, *rest)
        return None

    return handler


class MessageGuard(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer bootstep: wrap every task strategy (again after each reconnect)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        store_of = _store_of(c.app)
        # Before Tasks builds its handler, which binds these: Celery would only log and drop.
        c.on_unknown_message = _keep_then("no task header", c.on_unknown_message, store_of)
        c.on_unknown_task = _keep_then("unknown task", c.on_unknown_task, store_of)
        c.on_invalid_task = _keep_then("invalid task message", c.on_invalid_task, store_of)

    def start(self, c: Any) -> None:
        for name, handler in list(c.strategies.items()):
            if not hasattr(handler, "__wrapped__"):
                task = c.app.tasks.get(name)
                sig = _signature(task) if task is not None else None
                c.strategies[name] = guard(name, handler, sig, _store_of(c.app))


def _store_of(app: Any) -> StoreOf:
    return lambda: app.runtime.stores.state


def install_message_guard(app: Celery) -> None:
    app.steps["consumer"].add(MessageGuard)
