"""The worker side of ``bench/held_consume_gap.py``: the project's Celery settings
(``celeryconfig``: its Redis transport, msgpack, late acks, prefetch 1) and one task that
does nothing with its payload, so all a worker spends around it is the consume path.

Every pool process appends ``pid event perf_counter`` lines to ``$GAP_TRACE_DIR/<pid>``
at ``task_prerun`` and ``task_postrun``. With ``GAP_TRACE_PARENT=1`` the worker's
parent also stamps the steps of its consume path (BRPOP sent and read, the envelope's
JSON, kombu's message (base64), the unacked-hash write, the pool hand-off and each pipe
write to the child, the ack), a few microseconds each.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

import billiard.pool
from celery import Celery
from celery.concurrency import base as pool_base
from celery.signals import task_postrun, task_prerun
from kombu.transport.virtual import base as virtual_base

# As tasks.app does for a real worker: the decode kernel is ready before the first message.
import runtime.base64_body  # noqa: F401
from runtime import redis_transport

TASK = "consume_gap.noop"

app = Celery("consume_gap")
app.config_from_object("celeryconfig")

_fds: dict[int, int] = {}


def stamp(event: str, extra: str = "") -> None:
    pid = os.getpid()
    fd = _fds.get(pid)
    if fd is None:
        path = os.path.join(os.environ["GAP_TRACE_DIR"], str(pid))
        fd = _fds[pid] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, f"{pid} {event} {time.perf_counter():.7f} {extra}\n".encode())


def _prerun(**_: Any) -> None:
    stamp("prerun")


def _postrun(**_: Any) -> None:
    stamp("postrun")


task_prerun.connect(_prerun, weak=False)
task_postrun.connect(_postrun, weak=False)


@app.task(name=TASK)  # type: ignore[untyped-decorator]
def noop(payload: Any) -> int:
    return 0


def _stamped(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        stamp(f"{name}_start")
        try:
            return fn(*args, **kwargs)
        finally:
            stamp(f"{name}_end")

    return wrapper


def _trace_parent() -> None:
    channel = redis_transport.Channel
    channel._brpop_start = _stamped("brpop_send", channel._brpop_start)  # type: ignore[method-assign]
    channel._brpop_read = _stamped("brpop_read", channel._brpop_read)  # type: ignore[method-assign]
    decode = redis_transport.message_from_json  # type: ignore[attr-defined]
    setattr(redis_transport, "message_from_json", _stamped("json", decode))  # noqa: B010
    virtual_base.Message.__init__ = _stamped("message", virtual_base.Message.__init__)  # type: ignore[method-assign]
    qos = redis_transport.SettlingQoS
    qos.append = _stamped("unacked_hset", qos.append)  # type: ignore[method-assign]
    qos.ack = _stamped("ack", qos.ack)  # type: ignore[method-assign]
    pool_base.BasePool.apply_async = _stamped("pool_apply", pool_base.BasePool.apply_async)
    get_send_offset = billiard.pool._get_send_offset

    def traced_send_offset(connection: Any) -> Callable[[Any, int], int]:
        send = get_send_offset(connection)

        def send_offset(buf: Any, offset: int) -> int:
            written: int = send(buf, offset)
            stamp("pipe_write", str(written))
            return written

        return send_offset

    billiard.pool._get_send_offset = traced_send_offset


def _pipe_bytes(size: int) -> None:
    """Each pool child's job pipe this many bytes (``F_SETPIPE_SZ``), for comparison with
    the kernel's default 64 KB."""
    import fcntl

    get_send_offset = billiard.pool._get_send_offset

    def sized(connection: Any) -> Any:
        fcntl.fcntl(connection.fileno(), fcntl.F_SETPIPE_SZ, size)
        return get_send_offset(connection)

    billiard.pool._get_send_offset = sized


if os.environ.get("GAP_PIPE_BYTES"):
    _pipe_bytes(int(os.environ["GAP_PIPE_BYTES"]))
if os.environ.get("GAP_TRACE_PARENT") == "1":
    _trace_parent()


def _profile_parent(path: str) -> None:
    import cProfile

    from celery.signals import worker_process_init, worker_shutdown

    profile = cProfile.Profile()

    def _child(**_: Any) -> None:
        profile.disable()

    def _dump(**_: Any) -> None:
        profile.disable()
        profile.dump_stats(path)

    worker_process_init.connect(_child, weak=False)
    worker_shutdown.connect(_dump, weak=False)

    profile.enable()


if os.environ.get("GAP_PROFILE_PARENT"):
    _profile_parent(os.environ["GAP_PROFILE_PARENT"])
