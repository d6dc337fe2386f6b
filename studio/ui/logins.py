"""Logins that resist guessing, and sessions that end: for a studio served to a network.

- `LoginLimiter` counts failed logins per user name and per client address; past a limit within a
  window, that name (or address) is locked for a delay that doubles with each lock.
- `LoginGuard` is the ASGI middleware in front of the login route: it answers 429 without asking the
  app while a name or address is locked, and otherwise tells the limiter how each login ended
  (the app's 200 is a success, its 400 a wrong password).
- `SessionTokens` replaces the server's token table: a session older than its lifetime, or unused
  for longer than the idle lifetime, counts as logged out.

Both clocks are injectable, so tests need not sleep. Passwords are never read here beyond the user
name, and never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field

from starlette.requests import Request

log = logging.getLogger(__name__)

LOGIN_PATHS = ("/login", "/login/")
MAX_LOGIN_BODY = 64 * 1024  # a user name and a password: anything larger is not a login
MAX_RECORDS = 10_000  # past this many names and addresses tracked, forget those with nothing recent
IN_FLIGHT_WAIT_S = 1.0  # when attempts still being checked could reach the limit


@dataclass
class _Record:
    """Failed logins of one user name or one address."""

    failures: list[float] = field(default_factory=list)  # times of failures since the last lock
    pending: int = 0  # attempts let through whose outcome is not known yet
    locked_until: float = 0.0
    lockouts: int = 0  # consecutive locks: each doubles the delay
    last: float = 0.0  # time of the last failure


class LoginLimiter:
    """Failed-login counts per user name and per client address, and the locks they lead to.

    `user_limit` failures of one name within `window_s` lock that name; `address_limit` failures from one
    address (higher: a classroom may share one address) lock that address. A lock lasts `lock_s`, doubled
    for each further lock up to `max_lock_s`; a quiet `window_s` after a lock forgets the doubling, and a
    successful login clears its name's record. `clock` returns seconds (time.monotonic by default).
    """

    def __init__(self, user_limit: int = 5, address_limit: int = 20, window_s: float = 15 * 60, lock_s: float = 60.0,
                 max_lock_s: float = 60 * 60, clock=time.monotonic):
        self.limits = {"user": user_limit, "address": address_limit}
        self.window_s, self.lock_s, self.max_lock_s = window_s, lock_s, max_lock_s
        self.clock = clock
        self._records: dict[tuple[str, str], _Record] = {}
        self._lock = threading.Lock()

    def begin(self, user: str, address: str) -> float:
        """Seconds to wait before a login of `user` from `address` may be tried; 0 lets it through and counts it as in flight.

        Every attempt let through must be followed by one `end` call.
        """
        with self._lock:
            now = self.clock()
            keys = self._keys(user, address)
            wait = max(self._wait(key, now) for key in keys)
            if wait <= 0:
                for key in keys:
                    self._records.setdefault(key, _Record()).pending += 1
            return wait

    def end(self, user: str, address: str, ok: bool | None) -> None:
        """Record how an attempt let through by `begin` ended: True logged in, False wrong password, None neither."""
        with self._lock:
            now = self.clock()
            for key in self._keys(user, address):
                record = self._records.setdefault(key, _Record())
                record.pending = max(0, record.pending - 1)
                if ok is False:
                    self._fail(key, record, now)
                elif ok is True and key[0] == "user":
                    record.failures.clear()
                    record.lockouts, record.locked_until = 0, 0.0
                if not (record.failures or record.pending or record.lockouts or record.locked_until > now):
                    del self._records[key]  # nothing left to remember
            if len(self._records) > MAX_RECORDS:
                self._forget_idle(now)

    def retry_after(self, user: str, address: str) -> float:
        """Seconds until a login of `user` from `address` would be let through (0: now), without counting one."""
        with self._lock:
            now = self.clock()
            return max(self._wait(key, now) for key in self._keys(user, address))

    def _keys(self, user: str, address: str) -> tuple[tuple[str, str], tuple[str, str]]:
        return ("user", user), ("address", address)

    def _wait(self, key: tuple[str, str], now: float) -> float:
        record = self._records.get(key)
        if record is None:
            return 0.0
        if record.locked_until > now:
            return record.locked_until - now
        record.failures = [t for t in record.failures if now - t < self.window_s]
        if record.lockouts and now - max(record.last, record.locked_until) >= self.window_s:
            record.lockouts = 0  # quiet for a whole window: the next lock starts short again
        # Attempts still being checked may reach the limit: let them finish first, so a burst cannot outrun the
        # count. For an address only once it has failures: a class behind one address logs in all at once.
        in_flight = record.pending if key[0] == "user" or record.failures else 0
        if len(record.failures) + in_flight >= self.limits[key[0]]:
            return IN_FLIGHT_WAIT_S
        return 0.0

    def _fail(self, key: tuple[str, str], record: _Record, now: float) -> None:
        record.last = now
        record.failures = [t for t in record.failures if now - t < self.window_s] + [now]
        if len(record.failures) >= self.limits[key[0]]:
            delay = min(self.lock_s * 2**record.lockouts, self.max_lock_s)
            record.locked_until, record.lockouts = now + delay, record.lockouts + 1
            record.failures.clear()
            log.warning("too many failed logins for %s %r: locked for %d s", key[0], key[1], delay)

    def _forget_idle(self, now: float) -> None:
        for key, record in list(self._records.items()):
            if not record.pending and record.locked_until <= now and now - record.last >= self.window_s:
                del self._records[key]


class LoginGuard:
    """ASGI middleware in front of POST /login: refuses locked names and addresses, reports each outcome to a LoginLimiter.

    The body is read once (at most MAX_LOGIN_BODY bytes), its `username` parsed with the same form parser
    the app uses, and replayed to the app unchanged. The client address is the connection's (the server
    rewrites it from X-Forwarded-For only for proxies it trusts).
    """

    def __init__(self, app, limiter: LoginLimiter | None = None, paths: tuple[str, ...] = LOGIN_PATHS):
        self.app = app
        self.limiter = limiter or LoginLimiter()
        self.paths = paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or _route(scope) not in self.paths:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            await _send_json(send, 413, {"detail": f"a login request is at most {MAX_LOGIN_BODY} bytes"})
            return
        user = await _username(scope, body)
        address = (scope.get("client") or ("unknown",))[0]
        wait = self.limiter.begin(user, address)
        if wait > 0:
            seconds = math.ceil(wait)
            await _send_json(send, 429, {"detail": f"too many failed logins for this account or address: try again in {seconds} s",
                                         "retry_after_s": seconds}, [(b"retry-after", str(seconds).encode())])
            return
        status = None

        async def send_and_watch(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, _replay(body, receive), send_and_watch)
        finally:
            self.limiter.end(user, address, True if status == 200 else False if status == 400 else None)


class SessionTokens(dict):
    """The server's token -> user table, where a session ends `lifetime_s` after login or `idle_s` after its last use.

    An ended token reads as absent (`get`, `in`, `[]`) and is dropped. `clock` returns seconds (time.time by default).
    """

    def __init__(self, lifetime_s: float = 12 * 3600, idle_s: float = 2 * 3600, clock=time.time):
        super().__init__()
        self.lifetime_s, self.idle_s, self.clock = lifetime_s, idle_s, clock
        self._issued: dict[str, float] = {}
        self._used: dict[str, float] = {}
        self._lock = threading.RLock()

    def __setitem__(self, token, user) -> None:
        with self._lock:
            now = self.clock()
            self._drop_ended(now)  # keeps the table from growing with sessions nobody logged out of
            super().__setitem__(token, user)
            self._issued[token] = self._used[token] = now

    def __getitem__(self, token):
        with self._lock:
            if not self._alive(token):
                raise KeyError(token)
            return super().__getitem__(token)

    def get(self, token, default=None):
        """The user of a live session, else default (an ended session is dropped)."""
        with self._lock:
            return super().get(token, default) if self._alive(token) else default

    def __contains__(self, token) -> bool:
        with self._lock:
            return self._alive(token)

    def __delitem__(self, token) -> None:
        with self._lock:
            super().__delitem__(token)
            self._issued.pop(token, None)
            self._used.pop(token, None)

    def keys(self):
        """The tokens of live sessions."""
        with self._lock:
            self._drop_ended(self.clock())
            return super().keys()

    def _alive(self, token) -> bool:
        """Whether token is a live session; marks it used, or drops it when it has ended."""
        try:
            if not super().__contains__(token):
                return False
        except TypeError:  # an unhashable value is no token
            return False
        now = self.clock()
        if self._ended(token, now):
            self.__delitem__(token)
            return False
        self._used[token] = now
        return True

    def _ended(self, token, now: float) -> bool:
        if token not in self._issued:  # added some way other than `[]=`: no issue time, so no session
            return True
        return now - self._issued[token] >= self.lifetime_s or now - self._used[token] >= self.idle_s

    def _drop_ended(self, now: float) -> None:
        for token in [t for t in list(self) if self._ended(t, now)]:
            self.__delitem__(token)


def threaded(check):
    """An async auth callable running the (slow, salted-hash) `check(user, password)` in a worker thread,
    so that one login does not hold up every other request of the server."""

    async def check_in_thread(user: str, password: str) -> bool:
        return await asyncio.to_thread(check, user, password)

    return check_in_thread


def _route(scope) -> str:
    """The request path below the app's root path (a proxy may mount the studio under a prefix)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


async def _read_body(receive) -> bytes | None:
    """The whole request body, or None when it is larger than MAX_LOGIN_BODY."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away: what arrived is all there is
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_LOGIN_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive):
    """A receive callable that hands the app the buffered body, then whatever the connection says next."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _username(scope, body: bytes) -> str:
    """The form's `username`, stripped as the app strips it; "" when the body has none."""
    async def no_more():
        return {"type": "http.disconnect"}

    request = Request({**scope, "type": "http"}, receive=_replay(body, no_more))
    try:
        form = await request.form(max_files=1, max_fields=10)
        value = form.get("username")
        await form.close()
    except Exception:  # noqa: BLE001  # any unparseable body (the form parser has several errors): the app refuses it too; count it under no name
        return ""
    return value.strip() if isinstance(value, str) else ""


async def _send_json(send, status: int, content: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
