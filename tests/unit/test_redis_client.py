"""Redis URLs: plain, and Sentinel-managed for the state store and the Celery broker."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio

from jitbroker.redis_client import (
    SentinelURL,
    celery_broker,
    connect_async_redis,
    connect_redis,
)


def test_sentinel_url_names_sentinels_master_and_db() -> None:
    parsed = SentinelURL.parse(
        "redis+sentinel://:s3cret@sentinel-0:26379,sentinel-1,sentinel-2:26380/mymaster/2"
        "?sentinel_password=spw"
    )

    assert parsed.sentinels == [("sentinel-0", 26379), ("sentinel-1", 26379), ("sentinel-2", 26380)]
    assert parsed.master == "mymaster"
    assert parsed.db == 2
    assert parsed.password == "s3cret"
    assert parsed.username is None
    assert parsed.sentinel_password == "spw"


def test_sentinel_url_without_master_is_refused() -> None:
    with pytest.raises(ValueError, match="master name"):
        SentinelURL.parse("redis+sentinel://sentinel-0:26379")


def test_plain_url_goes_to_celery_unchanged() -> None:
    assert celery_broker("redis://redis:6379/1") == ("redis://redis:6379/1", {})


def test_sentinel_url_becomes_kombus_sentinel_transport() -> None:
    url, options = celery_broker("redis+sentinel://:p%40ss@s0:26379,s1:26379/mymaster/1")

    assert url == "sentinel://:p%40ss@s0:26379/1;sentinel://:p%40ss@s1:26379/1"
    assert options == {"master_name": "mymaster"}


def test_plain_url_connects_directly() -> None:
    client = connect_redis("redis://127.0.0.1:6390/3")

    assert isinstance(client, redis.Redis)
    assert client.connection_pool.connection_kwargs["db"] == 3


def test_sentinel_url_connects_through_the_sentinels() -> None:
    client = connect_redis("redis+sentinel://s0:26379/mymaster/4", socket_timeout=2)

    pool = client.connection_pool
    assert type(pool).__name__ == "SentinelConnectionPool"
    assert pool.service_name == "mymaster"  # type: ignore[attr-defined]
    assert pool.connection_kwargs["db"] == 4


def test_plain_url_gives_an_asyncio_client_too() -> None:
    client = connect_async_redis("redis://127.0.0.1:6390/3", socket_timeout=2)

    assert isinstance(client, redis.asyncio.Redis)
    assert client.connection_pool.connection_kwargs["db"] == 3
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 2


def test_sentinel_url_gives_an_asyncio_client_through_the_sentinels() -> None:
    client = connect_async_redis(
        "redis+sentinel://:pw@s0:26379,s1:26380/mymaster/4?sentinel_password=spw", socket_timeout=2
    )

    pool = client.connection_pool
    assert type(pool).__name__ == "SentinelConnectionPool"
    assert pool.service_name == "mymaster"  # type: ignore[attr-defined]
    assert pool.connection_kwargs["db"] == 4
    assert pool.connection_kwargs["password"] == "pw"
    sentinels = pool.sentinel_manager.sentinels  # type: ignore[attr-defined]
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [26379, 26380]
    assert sentinels[0].connection_pool.connection_kwargs["password"] == "spw"


def test_celery_app_follows_the_sentinel_master() -> None:
    from jitbroker.config import Settings
    from jitbroker.worker import create_celery

    app = create_celery(Settings(celery_broker_url="redis+sentinel://s0:26379/mymaster/6"))

    assert app.conf.broker_url == "sentinel://s0:26379/6"
    assert app.conf.broker_transport_options["master_name"] == "mymaster"
    assert app.conf.broker_transport_options["visibility_timeout"] == 300
