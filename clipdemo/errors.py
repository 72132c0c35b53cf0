"""The one base class for errors whose message is written for the person using clipdemo.

A ``UserError``'s ``str()`` is one short sentence, safe to show (no traceback, no secrets): the UI shows it as
a toast, the CLI prints it and exits 2, a training job records it. Each module raises its own subclass
(``ImageError``, ``DataError``, ``CheckpointError``, ...) so callers can still tell them apart; the UI, the CLI
and the jobs catch this base once. Anything else is a bug: logged, answered generically.
"""

from __future__ import annotations


def first_line(error: BaseException, limit: int | None = 160) -> str:
    """The first line of an error's message (its type when it has none), cut to ``limit`` characters (None: not
    cut): for sentences that quote a library's error, and for log lines."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]


class UserError(ValueError):
    """Something the user can fix (a bad file, argument, dataset or setting); the message says what."""


class ConfigError(UserError):
    """An environment variable holds a value clipdemo can't use."""


class ModelUnavailable(UserError):
    """A model can't be had (offline, wrong id, broken folder, no GPU); the message says what to do."""
