"""The process-wide redactor: permanent values forever, per-action values while they matter,
and well-known secret shapes with a marker naming what was cut, nothing else touched (hashes,
ids and prose pass unchanged)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from graph.policy import parse_policy
from tools.secrets import MASK, SHAPES, Redactor

def test_transient_values_are_redacted_while_live_and_for_the_last_few_released():
    redactor = Redactor(released_kept=2)
    redactor.add("static-secret", transient=False)
    values = [f"dynamic-password-{i}" for i in range(4)]
    for value in values:
        redactor.add(value, transient=True)
    assert all(redactor.redact(v) == MASK for v in values)  # live: never evicted
    for value in values:
        redactor.release(value)
    assert [redactor.redact(v) == MASK for v in values] == [False, False, True, True]
    assert redactor.redact("static-secret") == MASK and len(redactor) == 3


def test_releasing_a_permanent_or_unknown_value_changes_nothing():
    redactor = Redactor(released_kept=0)
    redactor.add("kept-forever")
    redactor.release("kept-forever")
    redactor.release("never-added")
    assert redactor.redact("kept-forever never-added") == f"{MASK} never-added"


def test_a_remembered_redaction_never_outlives_a_change_of_values_or_shapes():
    """Redactions of short texts are remembered; a value added, a value released past the
    kept few, or other shapes make every remembered one stale."""
    redactor = Redactor(released_kept=0, shapes=())
    text = "login with hunter2-pass and xoxb-123456789012-AbCdEfGhIjKl"
    assert redactor.redact(text) == text  # remembered: nothing in it was secret yet
    redactor.add("hunter2-pass", transient=True)
    assert redactor.redact(text) == f"login with {MASK} and xoxb-123456789012-AbCdEfGhIjKl"
    redactor.use(SHAPES)
    assert redactor.redact(text) == f"login with {MASK} and [redacted:slack-token]"
    redactor.release("hunter2-pass")
    assert redactor.redact(text) == "login with hunter2-pass and [redacted:slack-token]"


def test_remembering_is_bounded_and_long_texts_are_redacted_each_time():
    from tools.secrets import CACHE_BUDGET, CACHE_ENTRY, CACHED_CHARS

    redactor = Redactor()
    line = "y" * 1000
    for i in range(2 * CACHE_BUDGET // 2000 + 10):
        redactor.redact(f"{i} {line}")
    assert 0 < sum(len(k) + len(v) for k, (_, v) in redactor._cache.items()) <= CACHE_BUDGET + 2010
    for i in range(CACHE_BUDGET // CACHE_ENTRY + 10):  # tiny texts: the entries are the cost
        redactor.redact(str(i))
    assert len(redactor._cache) <= CACHE_BUDGET // CACHE_ENTRY + 1
    redactor.add("s3cr3t-value")
    long_text = "x" * CACHED_CHARS + " s3cr3t-value"
    assert redactor.redact(long_text).endswith(MASK) and long_text not in redactor._cache


AWS_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SAMPLES = {
    "aws-access-key-id": f"aws_access_key_id = {AWS_ID}",
    "aws-secret-access-key": f"aws_secret_access_key={AWS_SECRET}",
    "slack-token": "token xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "slack-app-token": "app xapp-1-A0123ABCD-4567890123-abcdef0123456789",
    "slack-webhook": "post to https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXX",
    "github-token": "GITHUB_TOKEN=ghp_0123456789abcdefghijABCDEFGHIJ012345",
    "openai-key": "OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwxyz012345",
    "google-api-key": "key=AIzaSyA1234567890abcdefghijklmnopqrstuv",
    "stripe-key": "stripe sk_live_0123456789abcdefghijklmn",
    "jwt": "cookie eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0",
    "private-key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx\n"
                   "-----END RSA PRIVATE KEY-----",
    "url-password": "REDIS_URL=redis://default:hunter2-but-longer@cache:6379/0",
    "bearer-token": "Authorization: Bearer abcdefghijklmnop.qrstuvwxyz",
}
SECRETS = {
    "aws-access-key-id": AWS_ID, "aws-secret-access-key": AWS_SECRET,
    "slack-token": "xoxb-123456789012", "slack-app-token": "xapp-1-A0123ABCD",
    "slack-webhook": "B0000/XXXX", "github-token": "ghp_0123456789",
    "openai-key": "sk-proj-abcdef", "google-api-key": "AIzaSyA12345",
    "stripe-key": "sk_live_0123", "jwt": "eyJhbGciOiJIUzI1NiJ9",
    "private-key": "MIIEowIBAAKCAQEAx", "url-password": "hunter2",
    "bearer-token": "abcdefghijklmnop",
}
HARMLESS = [
    "git 3b025d2f0a1b2c3d4e5f60718293a4b5c6d7e8f9 hash " + "ab" * 32,
    "approval a-1f2e3d4c5b6a run r-1a2b3c4d channel C0OPS user UAPPR1 ts 1796525602.158478",
    "task-abcdefghijklmnopqrstuvwxyz risk-assessment-for-production-database",
    "https://example.com:8443/path@v1 and redis://cache:6379/0",
    "used_memory:1048576\nmaxmemory_policy:allkeys-lru\nredis_version:7.0.15",
    "The token bucket refills every second; a bearer of bad news.",
    "Delete 2 Redis key(s): session:1, session:2",
]


@pytest.mark.parametrize("name", list(SAMPLES))
def test_each_shape_is_replaced_by_a_marker_naming_it(name):
    text = SAMPLES[name]
    redacted = Redactor().redact(text)
    assert f"[redacted:{name}]" in redacted and SECRETS[name] not in redacted, redacted


def test_every_shape_has_a_sample():
    assert set(SAMPLES) == {s.name for s in SHAPES}


@pytest.mark.parametrize("text", HARMLESS)
def test_ordinary_text_ids_and_hashes_are_left_alone(text):
    assert Redactor().redact(text) == text


def test_a_url_keeps_its_user_and_host_and_an_unterminated_key_is_cut_to_the_end():
    redactor = Redactor()
    assert redactor.redact("redis://app:pw-12345@cache:6379") == (
        "redis://app:[redacted:url-password]@cache:6379")
    cut = redactor.redact("ok\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI... (truncated)")
    assert cut == "ok\n[redacted:private-key]"


def test_known_values_and_shapes_together_and_what_was_found():
    redactor = Redactor()
    redactor.add("opsbot-signing-secret")
    text = f"sig opsbot-signing-secret key {AWS_ID}"
    assert redactor.redact(text) == f"sig {MASK} key [redacted:aws-access-key-id]"
    assert redactor.found(text) == ["aws-access-key-id", "value"]
    assert redactor.found("nothing here") == []


def test_redact_obj_reaches_keys_values_and_lists():
    data = {AWS_ID: [{"token": SAMPLES["slack-token"]}], "n": 3, "ok": None}
    redacted = Redactor().redact_obj(data)
    assert AWS_ID not in str(redacted) and "xoxb-" not in str(redacted)
    assert redacted["n"] == 3 and redacted["ok"] is None


def test_the_policy_picks_shapes_and_adds_its_own():
    policy = parse_policy("version: 1\nredaction:\n  shapes: [slack-token]\n  extra:\n"
                          "    acme-key: 'ACME-[0-9A-F]{12}'\n")
    redactor = Redactor()
    redactor.use(policy.redaction())
    text = f"{SAMPLES['slack-token']} {AWS_ID} ACME-0123456789AB"
    assert redactor.redact(text) == (
        f"token [redacted:slack-token] {AWS_ID} [redacted:acme-key]"), "AWS not chosen"
    nothing = parse_policy("version: 1\nredaction: {shapes: none}\n")
    redactor.use(nothing.redaction())
    assert redactor.redact(text) == text


@pytest.mark.parametrize("section, error", [
    ("shapes: [slack]", "redaction.shapes[0]: `slack` is not a secret shape opsbot knows"),
    ("shapes: 3", "redaction.shapes: `3` is not `all`, `none` or a list of secret shapes"),
    ("extra: {x: 'a*'}", "redaction.extra.x: `a*` matches empty text"),
    ("extra: {x: '('}", "redaction.extra.x: `(` is not a valid regular expression"),
])
def test_bad_redaction_settings_are_sentences(section, error):
    with pytest.raises(ValueError, match=r"policy\.yml:\d+: " + error.replace("[", r"\[")
                       .replace("]", r"\]").replace("(", r"\(").replace("*", r"\*")):
        parse_policy(f"version: 1\nredaction:\n  {section}\n")


separator = st.sampled_from([" ", "\n", "\t", ", ", " = ", ": "])


@given(prefix=st.text(max_size=60), suffix=st.text(max_size=60), name=st.sampled_from(
    sorted(SAMPLES)), left=separator, right=separator)
def test_a_secret_anywhere_in_any_text_is_cut(prefix, suffix, name, left, right):
    text = prefix + left + SAMPLES[name] + right + suffix
    assert SECRETS[name] not in Redactor().redact(text)
