"""Signed logins: what the page's cookie holds. Who logged in (a principal: the admin key's
digest prefix, or a virtual key's sha256) and until when, signed with a secret the store makes
once and keeps for every replica."""

from __future__ import annotations

import hashlib
import hmac
import time

from capture.store import Store

LOGIN_S = 12 * 3600
SECRET_NAME = "operator_page_logins"


class Logins:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._secret: bytes | None = None

    async def _signing_key(self) -> bytes:
        if self._secret is None:  # read once: the store makes it the first time any replica asks
            self._secret = bytes.fromhex(await self.store.shared_secret(SECRET_NAME))
        return self._secret

    async def cookie_for(self, principal: str, now: float | None = None) -> str:
        signed = f"{principal}.{int((now or time.time()) + LOGIN_S)}"
        return f"{signed}.{self._sign(await self._signing_key(), signed)}"

    async def principal_of(self, cookie: str, now: float | None = None) -> str | None:
        """Who the cookie names, if its signature holds and its time has not run out. Anything
        else a browser sends is no login, never an error."""
        signed, _, signature = cookie.rpartition(".")
        principal, _, until = signed.rpartition(".")
        if not principal or not signed.isascii() or not signature.isascii():
            return None
        expected = self._sign(await self._signing_key(), signed)
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return None
        return principal if until.isdigit() and int(until) >= (now or time.time()) else None

    @staticmethod
    def _sign(key: bytes, text: str) -> str:
        return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
