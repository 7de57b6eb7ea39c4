"""``opsbot chat``: the real bot in a terminal (a subprocess fed on stdin), real Redis and sandbox."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker


def chat(stdin: str, env: dict[str, str], timeout: float = 120) -> str:
    result = subprocess.run([sys.executable, "-m", "bot.cli", "chat"], input=stdin, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture
def env(redis_server, sandbox_image, tmp_path):
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SLACK_", "OPSBOT_", "OPENAI_", "VAULT_"))}
    return {**clean, "REDIS_URL": redis_server.url, "OPSBOT_DATA_DIR": str(tmp_path / "data"),
            "OPSBOT_LOG_LEVEL": "warning"}


def test_console_runs_typed_commands_and_asks_at_a_prompt(env, redis_db):
    redis_db.set("session:1", "x")
    out = chat("help\nredis get session:1\nredis flushdb\nn\nredis flushdb\ny\n", env)
    assert "`redis info [db=…] [section=…]`" in out  # help, generated from the toolsets
    assert "✅ Read Redis key `session:1`" in out and "\nx\n" in out
    assert "approval needed: Delete every key in the Redis database" in out
    assert "denied at the console" in out
    assert "Flushed the database (1 keys removed)" in out
    assert redis_db.dbsize() == 0


def test_console_explains_unknown_input(env):
    out = chat("rdis info\nwhy is redis slow?\n", env)
    assert "Unknown command `rdis`. Did you mean `redis`?" in out
    assert "No LLM is configured" in out


def test_console_answers_runs_and_cancel_itself(env):
    out = chat("runs\ncancel r-00000000\n", env)
    assert "No active runs in this channel." in out
    assert "There is no run `r-00000000`." in out
    assert "▶ run" not in out, "neither became a run"


def test_the_terminal_shows_the_conversation_not_json_logs(env):
    """At the default log level the bot logs plenty (ready, sandbox, runs); in the console it
    all goes to <data dir>/opsbot.log, and the terminal (stdout and stderr together, as a
    person sees them) holds only the conversation."""
    env = {**env, "OPSBOT_LOG_LEVEL": "info"}
    result = subprocess.run([sys.executable, "-m", "bot.cli", "chat"], input="redis info\n",
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "✅ Read Redis INFO" in result.stdout
    assert not [line for line in result.stdout.splitlines() if line.lstrip().startswith("{")]
    logged = (Path(env["OPSBOT_DATA_DIR"]) / "opsbot.log").read_text().splitlines()
    events = [json.loads(line)["event"] for line in logged]
    assert "opsbot ready" in events and "sandbox.run" in events


def test_console_says_why_a_run_over_the_policy_limit_did_not_start(env, tmp_path):
    policy = tmp_path / "policy.yml"
    policy.write_text("version: 1\nlimits:\n  runs_per_user: 1/1h\n")
    out = chat("rdis info\nredis info\n", {**env, "OPSBOT_POLICY": str(policy)})
    assert out.count("▶ run") == 1, "the second request started nothing"
    assert ("⛔ UCONSOLE has started 1 run in the last 1h; the policy allows 1 per 1h per "
            "person. Nothing was started; try again later.") in out
