"""The Redis connector's actions against a real redis-server (run in-process, no sandbox)."""

import pytest

from tools.base import ActionContext, Status, Tier
from tools.catalog import Call, CallError, Catalog
from tools.redis import TOOLSET, RedisConfig


@pytest.fixture
def catalog(redis_server):
    return Catalog([TOOLSET], {"redis": RedisConfig(url=redis_server.url)})


def run(catalog, action, **params):
    resolved = catalog.resolve(Call(id="t", toolset="redis", action=action, params=params))
    ctx = ActionContext(config=resolved.config.model_dump())
    return resolved.action.run(resolved.params, ctx)


def test_info_reads_the_real_server(catalog, redis_db):
    result = run(catalog, "info", section="server")
    assert result.status is Status.OK
    assert "redis_version:" in result.output
    assert result.invocation == "INFO server"


def test_get_scan_and_del(catalog, redis_db):
    redis_db.set("user:1", "alice")
    redis_db.set("user:2", "bob")
    redis_db.rpush("queue", "x")
    assert run(catalog, "get", key="user:1").output == "alice"
    assert run(catalog, "get", key="missing").status is Status.NO_DATA
    wrong = run(catalog, "get", key="queue")
    assert wrong.status is Status.ERROR and "list" in wrong.error
    scan = run(catalog, "scan", match="user:*")
    assert scan.data == ["user:1", "user:2"]
    deleted = run(catalog, "del", keys="user:1,missing")
    assert deleted.data == {"deleted": 1}
    assert redis_db.exists("user:1") == 0


def test_flushdb_empties_only_its_database(catalog, redis_server, redis_db):
    redis_db.set("a", "1")
    other = redis_server.client(db=3)
    other.set("b", "2")
    result = run(catalog, "flushdb")
    assert result.data == {"removed": 1}
    assert redis_db.dbsize() == 0 and other.dbsize() == 1


def test_slowlog_empty_is_no_data(catalog, redis_db):
    redis_db.slowlog_reset()
    assert run(catalog, "slowlog", count=5).status is Status.NO_DATA


def test_unreachable_server_is_an_error_value():
    catalog = Catalog([TOOLSET], {"redis": RedisConfig(url="redis://127.0.0.1:1/0")})
    result = run(catalog, "info")
    assert result.status is Status.ERROR
    assert "ConnectionError" in result.error


def test_tiers_targets_and_summaries(catalog, redis_server):
    resolved = catalog.resolve(Call(id="t", toolset="redis", action="flushdb", params={"db": 2}))
    assert resolved.tier is Tier.PRODUCTION
    assert resolved.target.attrs == {"host": "127.0.0.1", "port": str(redis_server.port), "db": "2"}
    assert resolved.summary == "Delete every key in the Redis database 2"
    assert [str(e) for e in resolved.egress] == [f"127.0.0.1:{redis_server.port}"]
    assert {a.name: a.tier for a in TOOLSET.actions} == {
        "info": 0, "slowlog": 0, "get": 0, "scan": 0, "exists": 0, "del": 3, "flushdb": 4, "flushall": 4,
    }


@pytest.mark.parametrize(
    "action,params,message",
    [
        ("flush", {}, "Did you mean `flushdb`?"),
        ("get", {}, "key: Field required"),
        ("scan", {"limit": 5000}, "limit: Input should be less than or equal to 1000"),
        ("info", {"section": "a b"}, "section: String should match pattern"),
        ("info", {"extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_bad_calls_are_specific_sentences(catalog, action, params, message):
    with pytest.raises(CallError, match=message.replace("(", r"\(")):
        catalog.resolve(Call(id="t", toolset="redis", action=action, params=params))


def test_hash_binds_params_and_target(catalog):
    a = catalog.resolve(Call(id="1", toolset="redis", action="del", params={"keys": ["a"]}))
    b = catalog.resolve(Call(id="2", toolset="redis", action="del", params={"keys": "a"}))
    c = catalog.resolve(Call(id="3", toolset="redis", action="del", params={"keys": ["b"]}))
    assert a.hash == b.hash != c.hash


def test_password_in_url_is_refused():
    with pytest.raises(ValueError, match="must not contain a password"):
        RedisConfig(url="redis://:hunter2@127.0.0.1:6379/0")


def test_previews_show_what_would_change(catalog, redis_db):
    redis_db.set("user:1", "a")
    redis_db.set("user:2", "b", ex=300)
    resolved = catalog.resolve(Call(id="t", toolset="redis", action="del",
                                    params={"keys": ["user:1", "user:2", "nope"]}))
    ctx = ActionContext(config=resolved.config.model_dump())
    preview = resolved.action.preview(resolved.params, ctx)
    assert preview.output.startswith("2 of 3 keys exist:")
    assert "user:2: string, expires in" in preview.output and "nope: missing" in preview.output
    flush = catalog.resolve(Call(id="t", toolset="redis", action="flushdb", params={}))
    text = flush.action.preview(flush.params, ctx).output
    assert "This database has 2 keys" in text and "db0: 2 keys" in text
    assert redis_db.dbsize() == 2, "a preview changes nothing"
