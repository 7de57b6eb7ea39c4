"""The session PostgreSQL fixture starts a real, private server that psycopg can use."""

import psycopg



def test_server_is_postgres_15_on_loopback_with_trust_auth(postgres_dsn):
    assert postgres_dsn.startswith("postgresql://postgres@127.0.0.1:")
    with psycopg.connect(postgres_dsn) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()[0]
        listen = conn.execute("SHOW listen_addresses").fetchone()[0]
        fsync = conn.execute("SHOW fsync").fetchone()[0]
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert int(version) // 10000 == 15
        assert listen == "127.0.0.1" and fsync == "off"
        assert superuser.fetchone()[0] is True


async def test_async_round_trip_in_a_fresh_database(postgres_database):
    async with await psycopg.AsyncConnection.connect(postgres_database) as conn:
        await conn.execute("CREATE TABLE runs (id text PRIMARY KEY, state jsonb NOT NULL)")
        await conn.execute(
            "INSERT INTO runs VALUES (%s, %s)", ("r1", psycopg.types.json.Jsonb({"step": 2}))
        )
        row = await (await conn.execute("SELECT state FROM runs WHERE id = 'r1'")).fetchone()
        name = await (await conn.execute("SELECT current_database()")).fetchone()
    assert row[0] == {"step": 2}
    assert name[0].startswith("test_") and postgres_database.endswith(name[0])


def test_each_test_database_is_new_and_empty(postgres_database):
    with psycopg.connect(postgres_database) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()[0]
    assert tables == 0
