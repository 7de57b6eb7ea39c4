"""Connector settings become connector configs at boot; a bad one is one sentence naming the
variable (``bot.wiring.connector_configs``)."""

import pytest

from bot.errors import ConfigError
from bot.settings import Settings
from bot.wiring import connector_configs

REDIS = {"redis_url": "redis://127.0.0.1:6379/0"}
READ, WRITE = "database/creds/opsbot-redis-read", "database/creds/opsbot-redis-write"


def configs(**values):
    return connector_configs(Settings(_env_file=None, **values))


@pytest.mark.parametrize(
    "values,message",
    [
        ({**REDIS, "redis_read_role": READ},
         "OPSBOT_REDIS_READ_ROLE is invalid: dynamic credentials need both a read role and a "
         "write role."),
        ({**REDIS, "redis_read_role": "database/creds/*", "redis_write_role": WRITE},
         "OPSBOT_REDIS_READ_ROLE is invalid: must look like database/creds/<role>."),
        ({**REDIS, "redis_read_role": READ, "redis_write_role": WRITE,
          "redis_password_secret": "kv/data/redis#password"},
         "OPSBOT_REDIS_READ_ROLE is invalid: set either dynamic roles or a password secret, "
         "not both."),
    ],
)
def test_bad_connector_settings_are_one_sentence(values, message):
    with pytest.raises(ConfigError) as caught:
        configs(**values)
    assert str(caught.value) == message


def test_redis_roles_pick_the_credential_by_tier():
    from tools.redis import TOOLSET

    config = configs(**REDIS, redis_read_role=READ, redis_write_role=WRITE)["redis"]
    for action, role in (("info", READ), ("scan", READ), ("del", WRITE), ("flushall", WRITE)):
        refs = TOOLSET.secrets(TOOLSET.action(action), None, config)
        assert [(r.name, r.path, r.key, r.kind) for r in refs] == [
            ("redis_username", role, "username", "database"),
            ("redis_password", role, "password", "database")]
