"""Signed logins: what the page's cookie holds. Who logged in (a principal: the admin key's
digest prefix, or a virtual key's sha256), until when, and the login's own id, signed with a
secret the store makes once and keeps for every replica. Logging out ends the login by its id
in the store, so a copy of the cookie ends with it."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from capture.store import Store

LOGIN_S = 12 * 3600
SECRET_NAME = "operator_page_logins"


@dataclass(frozen=True, slots=True)
class Login:
    principal: str
    until: int  # Unix seconds
    id: str


class Logins:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._secret: bytes | None = None

    async def _signing_key(self) -> bytes:
        if self._secret is None:  # read once: the store makes it the first time any replica asks
            self._secret = bytes.fromhex(await self.store.shared_secret(SECRET_NAME))
        return self._secret

    async def cookie_for(self, principal: str, now: float | None = None) -> str:
        signed = f"{principal}.{int((now or time.time()) + LOGIN_S)}.{secrets.token_hex(12)}"
        return f"{signed}.{self._sign(await self._signing_key(), signed)}"

    async def login_of(self, cookie: str, now: float | None = None) -> Login | None:
        """The login the cookie holds, if its signature holds and its time has not run out
        (whether it was ended is `is_current`'s question). Anything else a browser sends is no
        login, never an error."""
        signed, _, signature = cookie.rpartition(".")
        parts = signed.split(".")
        if len(parts) != 3 or not signed.isascii() or not signature.isascii():
            return None
        expected = self._sign(await self._signing_key(), signed)
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return None
        principal, until, login_id = parts
        if not until.isdigit() or int(until) < (now or time.time()):
            return None
        return Login(principal, int(until), login_id)

    async def principal_of(self, cookie: str, now: float | None = None) -> str | None:
        """Who a current login names: signed, in time, and not ended."""
        login = await self.login_of(cookie, now)
        if login is None or await self.store.is_login_ended(login.id):
            return None
        return login.principal

    async def end(self, cookie: str) -> None:
        login = await self.login_of(cookie)
        if login is not None:
            await self.store.end_login(login.id, login.until)

    @staticmethod
    def _sign(key: bytes, text: str) -> str:
        return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
