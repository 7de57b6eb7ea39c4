"""How a database connector's action logs in: the settings and the refs they turn into.

Best first: a user that Vault's database engine creates for the action (``read_role`` for
tiers 0-1 and previews, ``write_role`` for changes; both or neither), or a password read from
Vault for the action (``password_secret``, ``kv/data/<path>#<key>``). The refs are named
``<prefix>_username`` / ``<prefix>_password`` in :attr:`ActionContext.secrets`.

Usage (a connector's config model and its ``secrets`` function)::

    class RedisConfig(Login):
        url: str
    def _secrets(action, params, config):
        return config.refs("redis", action.tier)
"""

from __future__ import annotations

from pydantic import BaseModel, field_validator, model_validator

from tools.base import SecretRef, Tier


class Login(BaseModel):
    password_secret: str | None = None
    read_role: str | None = None  # database/creds/<role>: a user per action, read-only
    write_role: str | None = None  # the same, allowed to change things

    @field_validator("password_secret")
    @classmethod
    def _secret_ref(cls, ref: str | None) -> str | None:
        return SecretRef.check(ref, static_example=None)  # a password lives in Vault

    @field_validator("read_role", "write_role")
    @classmethod
    def _role(cls, path: str | None) -> str | None:
        return SecretRef.check_role(path)

    @model_validator(mode="after")
    def _one_kind_of_login(self) -> Login:
        if (self.read_role is None) != (self.write_role is None):
            raise ValueError("dynamic credentials need both a read role and a write role")
        if self.read_role and self.password_secret:
            raise ValueError("set either dynamic roles or a password secret, not both")
        return self

    def refs(self, prefix: str, tier: Tier) -> list[SecretRef]:
        """What an action of ``tier`` logs in with (a preview asks with tier 0)."""
        if self.read_role and self.write_role:
            return SecretRef.login(prefix, self.read_role if tier <= Tier.RECOMMEND
                                   else self.write_role)
        if self.password_secret:
            return [SecretRef.parse(f"{prefix}_password", self.password_secret)]
        return []
