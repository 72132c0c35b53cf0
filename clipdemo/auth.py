"""Admin access: one shared secret (``CLIPDEMO_ADMIN_TOKEN``), compared in constant time, with failures slowed down;
on a Space with Hugging Face sign-in, also an allow-list of HF usernames (``CLIPDEMO_ADMIN_USERS``).

``AdminAuth(token, users=...).check(supplied, client=..., user=...)`` returns nothing or raises ``AuthError``;
``user`` is the username of the visitor's Hugging Face sign-in as Gradio verified it, or None. Every admin handler
calls it first, on the server, because Gradio serves every event through its queue API whether or not its tab
is visible. No token and no allow-list configured means admin is off: every check fails with a message saying how
to enable it.

Repeated failures are slowed down: after a few failed checks from one client (or many from all clients
together, for attackers that rotate addresses) every further check from it first waits a growing, capped
delay. The schedule, the clock and the sleep are injectable so tests run in milliseconds. Messages never
echo what was supplied, nor the secret.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable

from clipdemo.errors import UserError
from clipdemo.settings import space_with_oauth

log = logging.getLogger(__name__)

ENV = "CLIPDEMO_ADMIN_TOKEN"
USERS_ENV = "CLIPDEMO_ADMIN_USERS"
MAX_TOKEN_BYTES = 1024  # anything longer is not our token; don't spend time on it
FORGET_AFTER_S = 15 * 60  # failures older than this (since the last one) are forgiven
GLOBAL_SHARE = 5  # the global counter counts for one client's failures at 1/5 of the rate

DISABLED_MESSAGE = (
    f"Admin is disabled: no admin token is configured. To enable it, set the {ENV} environment variable "
    "(on Hugging Face Spaces: a secret named " + ENV + " in the Space's settings) and restart the app; on a Space, "
    f"{USERS_ENV} (Hugging Face usernames) also lets those accounts in by signing in."
)
REFUSED_MESSAGE = "Admin access refused: the admin token is missing or wrong."
REFUSED_SIGN_IN = "Admin access refused: sign in with an allowed Hugging Face account, or enter the admin token."


def sign_in_possible(env=None) -> bool:
    """Hugging Face sign-in can be trusted only on a Space with OAuth (``hf_oauth: true``): elsewhere Gradio's
    sign-in is a mock and its session cookie is signed with a public key, so anyone could claim any username."""
    return space_with_oauth(env)


class AuthError(UserError):
    """An admin action was refused; the message is short, generic and safe to show."""


def default_schedule(failures: int) -> float:
    """Seconds to wait before checking, given the failures so far: none for the first 3, then 1, 2, 4, 8, 10 s …"""
    return 0.0 if failures < 3 else min(10.0, 2.0 ** (failures - 3))


class AdminAuth:
    def __init__(
        self,
        token: str | None,
        *,
        users=(),
        schedule: Callable[[int], float] = default_schedule,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._secret = token.encode("utf-8") if token else None  # bytes: compare_digest needs ASCII str or bytes
        self._users = frozenset(u.strip().casefold() for u in users if u.strip())  # HF names ignore case
        self._schedule, self._sleep, self._clock = schedule, sleep, clock
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}  # client -> (count, time of last failure)
        self._global = (0, 0.0)

    @classmethod
    def from_settings(cls, settings, env=None) -> AdminAuth:
        """The token, and the allow-list where a Hugging Face sign-in can be trusted (see ``sign_in_possible``)."""
        users = settings.admin_users if sign_in_possible(env) else ()
        if settings.admin_users and not users:
            log.warning("%s is ignored: Hugging Face sign-in is trusted only on a Space with hf_oauth: true", USERS_ENV)
        return cls(settings.admin_token, users=users)

    def __repr__(self) -> str:  # never show the secret, not even in a traceback's locals
        return f"AdminAuth(enabled={self.enabled}, users={len(self._users)})"

    @property
    def enabled(self) -> bool:
        return self._secret is not None or bool(self._users)

    @property
    def sign_in(self) -> bool:
        """Whether an allow-listed Hugging Face sign-in is accepted."""
        return bool(self._users)

    def check(self, supplied: str | None, client: str | None = None, user: str | None = None) -> None:
        """Return if ``user`` is on the allow-list or ``supplied`` is the admin token, else raise ``AuthError``
        (after the throttling delay)."""
        if not self.enabled:
            raise AuthError(DISABLED_MESSAGE)
        if user and user.casefold() in self._users:
            return
        key = client or "?"
        delay = self._schedule(self._count(key))
        if delay > 0:
            self._sleep(delay)  # outside the lock: one slowed client must not stall the others
        given = (supplied or "").encode("utf-8", "replace")
        ok = self._secret is not None and len(given) <= MAX_TOKEN_BYTES and hmac.compare_digest(given, self._secret)
        if not ok:
            self._record_failure(key)
            raise AuthError(REFUSED_SIGN_IN if self._users else REFUSED_MESSAGE)
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
