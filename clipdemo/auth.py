"""Admin access: one shared secret (``CLIPDEMO_ADMIN_TOKEN``), compared in constant time, with failures slowed down.

``AdminAuth(token).check(supplied, client=...)`` returns nothing or raises ``AuthError``. Every admin handler
calls it first, on the server, because Gradio serves every event through its queue API whether or not its tab
is visible. No token configured means admin is off: every check fails with a message saying how to enable it.

Repeated failures are slowed down: after a few failed checks from one client (or many from all clients
together, for attackers that rotate addresses) every further check from it first waits a growing, capped
delay. The schedule, the clock and the sleep are injectable so tests run in milliseconds. Messages never
echo what was supplied, nor the secret.
"""

from __future__ import annotations

import hmac
import threading
import time
from typing import Callable

ENV = "CLIPDEMO_ADMIN_TOKEN"
MAX_TOKEN_BYTES = 1024  # anything longer is not our token; don't spend time on it
FORGET_AFTER_S = 15 * 60  # failures older than this (since the last one) are forgiven
GLOBAL_SHARE = 5  # the global counter counts for one client's failures at 1/5 of the rate

DISABLED_MESSAGE = (
    f"Admin is disabled: no admin token is configured. To enable it, set the {ENV} environment variable "
    "(on Hugging Face Spaces: a secret named " + ENV + " in the Space's settings) and restart the app."
)
REFUSED_MESSAGE = "Admin access refused: the admin token is missing or wrong."


class AuthError(PermissionError):
    """An admin action was refused; the message is short, generic and safe to show."""


def default_schedule(failures: int) -> float:
    """Seconds to wait before checking, given the failures so far: none for the first 3, then 1, 2, 4, 8, 10 s …"""
    return 0.0 if failures < 3 else min(10.0, 2.0 ** (failures - 3))


class AdminAuth:
    def __init__(
        self,
        token: str | None,
        *,
        schedule: Callable[[int], float] = default_schedule,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._secret = token.encode("utf-8") if token else None  # bytes: compare_digest needs ASCII str or bytes
        self._schedule, self._sleep, self._clock = schedule, sleep, clock
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}  # client -> (count, time of last failure)
        self._global = (0, 0.0)

    def __repr__(self) -> str:  # never show the secret, not even in a traceback's locals
        return f"AdminAuth(enabled={self.enabled})"

    @property
    def enabled(self) -> bool:
        return self._secret is not None

    def check(self, supplied: str | None, client: str | None = None) -> None:
        """Return if ``supplied`` is the admin token, else raise ``AuthError`` (after the throttling delay)."""
        if self._secret is None:
            raise AuthError(DISABLED_MESSAGE)
        key = client or "?"
        delay = self._schedule(self._count(key))
        if delay > 0:
            self._sleep(delay)  # outside the lock: one slowed client must not stall the others
        given = (supplied or "").encode("utf-8", "replace")
        ok = len(given) <= MAX_TOKEN_BYTES and hmac.compare_digest(given, self._secret)
        if not ok:
            self._record_failure(key)
            raise AuthError(REFUSED_MESSAGE)
        with self._lock:
            self._failures.pop(key, None)  # a success forgives that client, not the global count

    def failures(self, client: str | None = None) -> int:
        """The failure count that sets ``client``'s delay (its own, or its share of everyone's if larger)."""
        return self._count(client or "?")

    def _count(self, key: str) -> int:
        now = self._clock()
        with self._lock:
            count, last = self._failures.get(key, (0, 0.0))
            if count and now - last > FORGET_AFTER_S:
                count = 0
                self._failures.pop(key, None)
            g_count, g_last = self._global
            if g_count and now - g_last > FORGET_AFTER_S:
                self._global, g_count = (0, 0.0), 0
            return max(count, g_count // GLOBAL_SHARE)

    def _record_failure(self, key: str) -> None:
        now = self._clock()
        with self._lock:
            count, _ = self._failures.get(key, (0, 0.0))
            self._failures[key] = (count + 1, now)
            if len(self._failures) > 10_000:  # bound memory under an address-rotating attack
                oldest = min(self._failures, key=lambda k: self._failures[k][1])
                del self._failures[oldest]
            self._global = (self._global[0] + 1, now)
