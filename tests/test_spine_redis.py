"""The embedded redis-server: managed lifecycle, durability settings, AOF survival, clear errors."""

from __future__ import annotations

import os
import stat

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from worldplay_cli import redis_server as server
from worldplay_cli.contract.errors import WorldplayError
from worldplay_cli.contract.queue import rq_queue
from worldplay_cli.contract.settings import ServerSettings, Settings
from worldplay_cli.contract.specs import TASK_NOOP


@pytest.fixture
def own_server(tmp_path):
    settings = Settings(server=ServerSettings(data_dir=tmp_path / "redis"))
    yield settings
    server.stop(settings)


def test_start_is_idempotent_and_configures_durability(own_server):
    first = server.start(own_server)
    second = server.start(own_server)
    assert first["running"] and second["pid"] == first["pid"]
    assert first["aof_enabled"] and first["maxmemory_policy"] == "noeviction"
    paths = server.ServerPaths.of(own_server.server.data_dir)
    assert stat.S_IMODE(os.stat(paths.password).st_mode) == 0o600
    assert "****" in first["url"] and paths.password.read_text().strip() not in first["url"]
    # Without the generated password the server refuses us.
    anonymous = redis.Redis(unix_socket_path=str(paths.socket), retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()


def test_stop_ends_the_server_and_status_says_so(own_server):
    server.start(own_server)
    assert server.stop(own_server) is True
    assert server.status(own_server)["running"] is False
    assert server.stop(own_server) is False


def test_deep_data_dirs_get_a_short_socket_path(tmp_path):
    deep = tmp_path.joinpath(*["nested-directory-name"] * 6)
    paths = server.ServerPaths.of(deep)
    assert len(str(paths.socket)) <= 100 and paths.socket.name.endswith(".sock")


def test_queued_jobs_survive_a_restart_through_the_append_only_file(own_server):
    server.start(own_server)
    conn = server.connect(own_server)
    job_ids = [rq_queue(conn, "generate").enqueue(TASK_NOOP).id for _ in range(3)]
    # NOSAVE: no RDB snapshot is written, so only the AOF can bring the jobs back.
    conn.shutdown(nosave=True)
    paths = server.ServerPaths.of(own_server.server.data_dir)
    (paths.data_dir / "dump.rdb").unlink(missing_ok=True)
    server.start(own_server)
    conn = server.connect(own_server)
    assert rq_queue(conn, "generate").job_ids == job_ids


def test_connect_starts_the_embedded_server_on_demand(own_server):
    conn = server.connect(own_server)
    assert conn.ping()


def test_unreachable_redis_is_one_line_with_the_password_masked():
    with pytest.raises(WorldplayError) as caught:
        server.connect_url("redis://admin:hunter2@127.0.0.1:1/0")
    assert "cannot reach Redis at redis://admin:****@127.0.0.1:1/0" in caught.value.message
    assert "hunter2" not in caught.value.message and "\n" not in caught.value.message
    assert caught.value.hint


def test_a_wrong_password_is_reported_as_such(redis_server):
    url = redis_server(0).replace("unix://:", "unix://:wrong")
    with pytest.raises(WorldplayError, match="refused the credentials"):
        server.connect_url(url)


def test_acl_users_connect_by_url_and_wrong_passwords_are_one_line(redis_server, redis_conn):
    redis_conn.acl_setuser(
        "wp-user", enabled=True, passwords=["+s3cret"], keys=["*"], channels=["*"], commands=["+@all"]
    )
    try:
        base = redis_server(0).split("@", 1)[1]  # '/path/redis.sock?db=0'
        assert server.connect_url(f"unix://wp-user:s3cret@{base}").ping()
        with pytest.raises(WorldplayError) as caught:
            server.connect_url(f"unix://wp-user:wrong@{base}")
        assert "refused the credentials" in caught.value.message and "wrong" not in caught.value.message
    finally:
        redis_conn.acl_deluser("wp-user")
