"""opsbot's connection to Vault or OpenBao, and every Vault failure as one sentence.

hvac is synchronous: callers run these methods in a worker thread. The parent client (opsbot's
own token) is shared by those threads (requests' connection pool is thread-safe); a per-action
client is built for each minted token and closed after use.

Whatever keeps an action from its credentials is a :class:`VaultError` whose text is the
sentence the user reads.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import hvac
import hvac.exceptions as hvac_errors
import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

NOT_RUN = "the action did not run."


class VaultError(RuntimeError):
    """Credentials could not be provided; ``message`` (= ``str(e)``) is the sentence users read."""

    @property
    def message(self) -> str:
        return str(self)


class VaultConfig(BaseModel):
    """How opsbot reaches Vault or OpenBao; the app builds it from VAULT_ADDR and VAULT_TOKEN."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    addr: str
    token: SecretStr
    ttl_margin_s: float = Field(15.0, ge=0, le=3600)
    namespace: str | None = None
    timeout_s: float = Field(10.0, gt=0, le=120)

    @field_validator("addr")
    @classmethod
    def _http_url(cls, addr: str) -> str:
        if not re.fullmatch(r"https?://[^/\s]+/?", addr):
            raise ValueError("must look like http://127.0.0.1:8200 or https://vault.example:8200")
        return addr.rstrip("/")

    @field_validator("token")
    @classmethod
    def _non_empty(cls, token: SecretStr) -> SecretStr:
        if not token.get_secret_value().strip():
            raise ValueError("is empty")
        return token


class Vault:
    """Clients for one Vault, plus the translation of its failures into sentences."""

    def __init__(self, config: VaultConfig) -> None:
        self.config = config
        self._parent: hvac.Client | None = None

    @property
    def addr(self) -> str:
        return self.config.addr

    def parent(self) -> hvac.Client:
        """opsbot's own client (VAULT_TOKEN)."""
        if self._parent is None:
            self._parent = self.client(self.config.token.get_secret_value())
        return self._parent

    def client(self, token: str) -> hvac.Client:
        return hvac.Client(url=self.config.addr, token=token, namespace=self.config.namespace,
                           timeout=self.config.timeout_s)

    @contextmanager
    def translate(self, doing: str, denied: str = "", tail: str = NOT_RUN) -> Iterator[None]:
        """Turn hvac/requests exceptions into one sentence naming Vault, the step and the cause.

        ``denied`` names the secret path when a permission error is the child token's, not ours.
        """
        at = f"Vault at {self.addr}"
        try:
            yield
        except requests.RequestException as e:
            cause = _network_cause(e, self.config.timeout_s)
            raise VaultError(f"{at} is unreachable ({cause}); {tail}") from None
        except hvac_errors.Forbidden:
            raise VaultError(_forbidden(at, doing, denied) + tail) from None
        except hvac_errors.VaultDown:
            raise VaultError(f"{at} is sealed or unavailable; {tail}") from None
        except hvac_errors.VaultError as e:
            raise VaultError(f"{at} could not {doing}: {_vault_text(e)}; {tail}") from None


def _forbidden(at: str, doing: str, path: str) -> str:
    if path:
        return (f"{at} denied access to {path} (permission denied): check that the path is "
                "right and its secrets engine is enabled; ")
    return (f"{at} rejected VAULT_TOKEN while trying to {doing} (permission denied): the token "
            "is invalid, expired or revoked, or lacks the capability; ")


def _network_cause(error: BaseException, timeout: float) -> str:
    for cause in _chain(error):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name not found"
        if isinstance(cause, ssl.SSLError):
            return "TLS handshake failed"
        if isinstance(cause, (requests.Timeout, TimeoutError)):
            return f"no answer within {timeout:g} s"
    return "connection failed"


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The exception, its causes and contexts, and urllib3's ``reason`` links, without cycles."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        links = [item.__cause__, item.__context__, getattr(item, "reason", None), *item.args]
        todo += [link for link in links if isinstance(link, BaseException)]


def _vault_text(error: hvac_errors.VaultError) -> str:
    errors = getattr(error, "errors", None) or []
    text = "; ".join(str(e).strip() for e in errors) if isinstance(errors, list) else str(errors)
    return " ".join((text or type(error).__name__).split())
