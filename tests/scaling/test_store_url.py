"""NEUROQ_STORE's `?schema=NAME`: which schema a PostgreSQL store uses, and that two schemas in
one database are two independent queues (what per-test isolation and staging rely on)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import harness
import pytest

from neuroq.config import Settings
from neuroq.jobs import NewJob, now_ms
from neuroq.store import create_store
from neuroq.store.postgres import PostgresStore, split_schema


def test_schema_parameter_is_taken_out_of_the_url() -> None:
    store = create_store(Settings(store="postgresql://u@h/db?sslmode=require&schema=staging"))
    assert isinstance(store, PostgresStore)
    assert store.url == "postgresql://u@h/db?sslmode=require"
    assert store.schema == "staging" and store.channel == "neuroq_staging"


def test_public_schema_without_the_parameter() -> None:
    store = create_store(Settings(store="postgresql://u@h/db"))
    assert isinstance(store, PostgresStore)
    assert store.url == "postgresql://u@h/db" and store.schema == "public"


def test_other_options_in_the_url_are_kept_as_written() -> None:
    url = "postgresql://u@h/db?options=-c%20statement_timeout%3D5000&schema=s1"
    assert split_schema(url) == ("postgresql://u@h/db?options=-c%20statement_timeout%3D5000", "s1")
    store = create_store(Settings(store=url))
    assert isinstance(store, PostgresStore)
    # libpq reads the URL's options; the store adds its search_path after them.
    assert store._pool.kwargs["options"] == "-c statement_timeout=5000 -c search_path=s1"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://h/db?schema=a-b", "NEUROQ_STORE: schema='a-b': expected a plain identifier"),
        ("postgresql://h/db?schema=", "NEUROQ_STORE: schema: empty"),
        ("postgresql://h/db?schema=a&schema=b", "NEUROQ_STORE: schema: given 2 times"),
        (
            "postgresql://h/db?options=-csearch_path%3Dx",
            "NEUROQ_STORE: options: the store URL sets search_path; name the schema with",
        ),
        ("postgresql://h/db?colour=blue", "NEUROQ_STORE: url: not a PostgreSQL connection URL"),
    ],
)
def test_bad_store_urls_name_the_setting_and_the_part(url: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        create_store(Settings(store=url))


@pytest.fixture
def two_schemas() -> Iterator[tuple[str, str]]:
    if not harness.POSTGRES_URL:
        pytest.skip("set NEUROQ_TEST_POSTGRES_URL to run this on PostgreSQL")
    names = (f"t_{secrets.token_hex(6)}", f"t_{secrets.token_hex(6)}")
    yield names
    for name in names:
        harness.drop_postgres_schema(name)


async def test_two_schemas_are_two_queues(two_schemas: tuple[str, str]) -> None:
    first, second = (
        create_store(Settings(store=harness.postgres_store_url(name), recheck_s=5.0))
        for name in two_schemas
    )
    await first.open()
    await second.open()
    try:
        job, created = await first.submit(NewJob("ep", '{"n": 1}'), now_ms())
        assert created
        assert await second.get("ep", job.id) is None
        assert await second.take("ep", "w", 10, now_ms(), 60_000) == []
        assert (await second.health("ep", now_ms()))["jobs"]["inQueue"] == 0
        taken = await first.take("ep", "w", 10, now_ms(), 60_000)
        assert [j.id for j in taken] == [job.id]
    finally:
        await first.close()
        await second.close()
