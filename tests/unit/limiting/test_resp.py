"""The pipelined connection the hot path's scripts use, against a real redis-server: replies
matched to their commands in order under concurrency, a script loaded on NOSCRIPT, errors
raised, a lost connection failing what waited and the next call connecting again, a reply
whose caller gave up dropped, AUTH and SELECT from the URL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fakes.redis_server import RedisServer, command, redis_available
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from proxy.limits.resp import Script, ScriptClient, pack

ECHO = Script.of("return {ARGV[1], redis.call('INCR', KEYS[1])}")


@pytest.fixture
def redis_server(tmp_path: Path) -> Any:
    if not redis_available():
        pytest.skip("redis-server is not installed")
    with RedisServer(tmp_path) as server:
        yield server


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[ScriptClient]:
    scripts = ScriptClient(redis_server.url + "/3", connect_timeout=1.0)
    yield scripts
    await scripts.close()


def test_a_command_is_packed_as_an_array_of_bulk_strings() -> None:
    assert (
        pack("EVALSHA", "ab", 1, b"k")
        == b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$1\r\nk\r\n"
    )


async def test_concurrent_calls_get_their_own_replies_in_order(client: ScriptClient) -> None:
    replies = await asyncio.gather(*(client.run(ECHO, ["n"], [f"call-{i}"]) for i in range(50)))
    assert [reply[0] for reply in replies] == [f"call-{i}".encode() for i in range(50)]
    assert sorted(reply[1] for reply in replies) == list(range(1, 51))


async def test_the_script_is_loaded_when_redis_does_not_know_it(
    client: ScriptClient, redis_server: RedisServer
) -> None:
    await client.run(ECHO, ["k"], ["first"])
    command(redis_server.port, "SCRIPT", "FLUSH")
    assert (await client.run(ECHO, ["k"], ["again"]))[0] == b"again"


async def test_a_script_error_is_raised(client: ScriptClient) -> None:
    with pytest.raises(ResponseError):
        await client.run(Script.of("return redis.error_reply('nope')"), [], [])
    assert (await client.run(ECHO, ["k"], ["still fine"]))[0] == b"still fine"


async def test_db_and_password_come_from_the_url(
    client: ScriptClient, redis_server: RedisServer
) -> None:
    await client.run(ECHO, ["in-db-3"], ["x"])
    assert command(redis_server.port, "SELECT", "3") and client.db == 3
    scripts = ScriptClient("redis://:secret@127.0.0.1:1/0", connect_timeout=0.5)
    assert scripts.password == "secret" and scripts.port == 1


async def test_a_lost_connection_fails_the_waiting_and_the_next_call_reconnects(
    client: ScriptClient, redis_server: RedisServer
) -> None:
    await client.run(ECHO, ["k"], ["up"])
    redis_server.pause()
    waiting = asyncio.ensure_future(client.run(ECHO, ["k"], ["waiting"]))
    await asyncio.sleep(0.1)
    pipe = client._pipe
    assert pipe is not None and pipe.transport is not None
    pipe.transport.abort()  # the connection drops under the waiting call
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(waiting, 5)
    redis_server.resume()
    assert (await client.run(ECHO, ["k"], ["back"]))[0] == b"back"


async def test_a_caller_that_gives_up_leaves_its_reply_to_be_dropped(
    client: ScriptClient, redis_server: RedisServer
) -> None:
    redis_server.pause()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await client.run(ECHO, ["k"], ["late"])
    redis_server.resume()
    assert (await client.run(ECHO, ["k"], ["next"]))[0] == b"next"  # not the late one's reply


async def test_an_unreachable_redis_is_a_connection_error() -> None:
    scripts = ScriptClient("redis://127.0.0.1:1/0", connect_timeout=0.5)
    with pytest.raises(RedisConnectionError):
        await scripts.run(ECHO, ["k"], ["x"])
