"""``auto_forward``: retrofit EZThrottle onto existing code by raising ``ForwardToEZThrottle``
where the code would otherwise give up (a 429, a timeout)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar, overload

from .async_client import AsyncEZThrottle
from .client import EZThrottle
from .errors import ForwardToEZThrottle
from .types import JobOptions, SubmitResult

P = ParamSpec("P")
R = TypeVar("R")


def _options(e: ForwardToEZThrottle) -> JobOptions:
    # No key given means "this exact call, once": a fresh key, as the hosted SDK did, so a
    # forwarded retry is not mistaken for a duplicate of an earlier, different attempt.
    opts: JobOptions = {"idempotent_key": e.idempotent_key or str(uuid.uuid4())}
    if e.headers:
        opts["headers"] = e.headers
    if e.body is not None:
        opts["body"] = e.body
    if e.metadata:
        opts["metadata"] = e.metadata
    if e.webhooks:
        opts["webhooks"] = e.webhooks
    if e.regions:
        opts["regions"] = e.regions
    return opts


def _url(e: ForwardToEZThrottle) -> str:
    if not e.url:
        raise ValueError("ForwardToEZThrottle requires 'url'")
    return e.url


@overload
def auto_forward(
    client: EZThrottle,
) -> Callable[[Callable[P, R]], Callable[P, R | SubmitResult]]: ...
@overload
def auto_forward(
    client: AsyncEZThrottle,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R | SubmitResult]]]: ...


def auto_forward(client: EZThrottle | AsyncEZThrottle) -> Callable[..., Callable[..., object]]:
    """Decorator: when the function raises ``ForwardToEZThrottle``, submit the call it describes
    and return the submit result (``{"job_id", "status", "idempotent_key"}``) instead. With an
    ``AsyncEZThrottle`` it decorates coroutine functions."""

    if isinstance(client, AsyncEZThrottle):
        aclient = client

        def adecorator(
            func: Callable[P, Awaitable[R]],
        ) -> Callable[P, Awaitable[R | SubmitResult]]:
            @functools.wraps(func)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | SubmitResult:
                try:
                    return await func(*args, **kwargs)
                except ForwardToEZThrottle as e:
                    return await aclient.submit_job(_url(e), e.method, **_options(e))

            return wrapper

        return adecorator

    sclient = client

    def decorator(func: Callable[P, R]) -> Callable[P, R | SubmitResult]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | SubmitResult:
            try:
                return func(*args, **kwargs)
            except ForwardToEZThrottle as e:
                return sclient.submit_job(_url(e), e.method, **_options(e))

        return wrapper

    return decorator
