"""Boot-time configuration errors are one sentence naming the variable and the fix."""

import pytest

from bot.errors import ConfigError
from bot.settings import load_settings

CLEAN = ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "OPSBOT_PORT",
         "OPSBOT_WORKERS", "OPSBOT_DATA_DIR", "OPSBOT_DATABASE_URL", "REDIS_URL", "OPSBOT_SLACK_API_URL", "VAULT_ADDR"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in CLEAN:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


@pytest.mark.parametrize(
    "env,message",
    [
        ({"SLACK_BOT_TOKEN": "xoxp-user"}, "SLACK_BOT_TOKEN is invalid: must be a bot token starting with xoxb-; copy the Bot User OAuth Token"),
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, "SLACK_SIGNING_SECRET is not set: HTTP mode needs it"),
        ({"SLACK_APP_TOKEN": "xapp-1"}, "SLACK_APP_TOKEN is set but SLACK_BOT_TOKEN is not"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "abc"}, "SLACK_APP_TOKEN is invalid: must be an app-level token starting with xapp-"),
        ({"OPSBOT_PORT": "http"}, "OPSBOT_PORT is invalid: Input should be a valid integer"),
        ({"OPSBOT_PORT": "70000"}, "OPSBOT_PORT is invalid: Input should be less than or equal to 65535; use a TCP port"),
        ({"OPSBOT_WORKERS": "0"}, "OPSBOT_WORKERS is invalid"),
        ({"OPSBOT_DATABASE_URL": "mysql://db/opsbot"}, "OPSBOT_DATABASE_URL is invalid: must be a PostgreSQL URL (postgresql://…); use a URL like postgresql://"),
        ({"OPSBOT_WORKER_LANES": "chat,urgent"}, "OPSBOT_WORKER_LANES is invalid: unknown lane urgent; list lanes from"),
    ],
)
def test_bad_config_is_one_sentence(monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value) and "validation error" not in str(e.value)


def test_defaults_and_modes(monkeypatch):
    settings = load_settings()
    assert not settings.slack_enabled and settings.port == 3000
    assert str(settings.data_dir) == ".opsbot"
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1")
    monkeypatch.setenv("OPSBOT_SLACK_API_URL", "http://127.0.0.1:9/api")
    socket = load_settings()
    assert socket.socket_mode and socket.slack_api_url == "http://127.0.0.1:9/api/"


def test_dotenv_is_read(tmp_path):
    (tmp_path / ".env").write_text("OPSBOT_PORT=4567\nREDIS_URL=redis://10.0.0.1:6379/2\n")
    settings = load_settings()
    assert settings.port == 4567 and settings.redis_url == "redis://10.0.0.1:6379/2"


def test_secrets_do_not_show_in_repr(monkeypatch):
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-canary-123")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "sig-canary-456")
    text = repr(load_settings())
    assert "canary" not in text
