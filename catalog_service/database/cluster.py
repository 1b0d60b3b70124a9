"""The embedded PostgreSQL 15 cluster that tilekeeper manages itself.

Layout under ``data_dir`` (owned by the invoking user; the server's own parts by the
server's OS user, which differs only when tilekeeper runs as root, since initdb refuses root):

    credentials.json   role passwords, mode 0600
    pgdata/            the cluster
    run/               unix socket
    log/postgres.log   server log
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from catalog_service.database.connection import ADMIN_ROLE, Credentials, credentials_path
from catalog_service.errors import DatabaseSetupError
from catalog_service.settings import ApiSettings, DatabaseSettings, default_workers

PG_MAJOR = 15
_PG_BIN_CANDIDATES = (
    Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin"),
    Path(f"/usr/pgsql-{PG_MAJOR}/bin"),
    Path("/usr/local/pgsql/bin"),
)

# The most connections one `tilekeeper serve` worker opens: a read and a write pool of
# pool_size each, plus 2 tile registrations at a time (api/campaigns.py).
API_WORKER_CONNECTIONS = 2 * int(ApiSettings.model_fields["pool_size"].default) + 2


def max_connections() -> int:
    """Room for `tilekeeper serve` with its default workers (one per core) at their peak,
    plus 50 for the rest (db and auth commands, psql, a second service, superuser slots;
    runners and back-ends go through the API); never below the 200 it always had."""
    return max(200, API_WORKER_CONNECTIONS * default_workers() + 50)


@dataclass(frozen=True)
class ClusterStatus:
    data_dir: Path
    initialized: bool
    running: bool
    pid: int | None
    port: int


class EmbeddedCluster:
    """Create, start, stop and inspect the project-managed cluster."""

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        self.base = settings.data_dir.resolve()
        self.pgdata = self.base / "pgdata"
        self.run_dir = self.base / "run"
        self.log_file = self.base / "log" / "postgres.log"
        self.bin = self._find_bin(settings.pg_bin)

    # -- discovery -------------------------------------------------------------------

    @staticmethod
    def _find_bin(configured: Path | None) -> Path:
        candidates = [configured] if configured else list(_PG_BIN_CANDIDATES)
        on_path = shutil.which("pg_ctl")
        if not configured and on_path:
            candidates.append(Path(on_path).parent)
        for candidate in candidates:
            if candidate and (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
                return candidate
        raise DatabaseSetupError(
            f"PostgreSQL {PG_MAJOR} server binaries not found (looked in "
            f"{', '.join(str(c) for c in candidates if c)}). Install them with "
            f"`apt-get install postgresql-{PG_MAJOR} postgresql-{PG_MAJOR}-postgis-3`, or set "
            "TILEKEEPER_DB_PG_BIN."
        )

    @property
    def server_user(self) -> str | None:
        """The OS user to run the server as, or None for the current user."""
        return self.settings.os_user if os.geteuid() == 0 else None

    # -- helpers ---------------------------------------------------------------------

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.server_user:
            cmd = ["runuser", "-u", self.server_user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            raise DatabaseSetupError(
                f"`{' '.join(args)}` failed ({proc.returncode}):\n{proc.stderr or proc.stdout}"
                f"{self._log_tail()}"
            )
        return proc

    def _log_tail(self, lines: int = 15) -> str:
        try:
            tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\nServer log (" + str(self.log_file) + "):\n" + "\n".join(tail)

    def _own(self, path: Path, mode: int) -> None:
        path.chmod(mode)
        if self.server_user:
            try:
                entry = pwd.getpwnam(self.server_user)
            except KeyError as exc:
                raise DatabaseSetupError(
                    f"OS user {self.server_user!r} does not exist. Running as root, tilekeeper "
                    "runs PostgreSQL as a non-root user: create it (`useradd -r postgres`) or "
                    "set TILEKEEPER_DB_OS_USER."
                ) from exc
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _check_reachable(self) -> None:
        """The server's OS user must be able to enter every parent of the data dir."""
        if not self.server_user:
            return
        for parent in [self.base, *self.base.parents]:
            if not os.stat(parent).st_mode & 0o001:
                raise DatabaseSetupError(
                    f"{parent} is not searchable by other users, so the server's OS user "
                    f"{self.server_user!r} cannot reach {self.base}. Choose a data dir outside "
                    "it (TILEKEEPER_DB_DATA_DIR, e.g. /var/lib/tilekeeper)."
                )

    def _pid(self) -> int | None:
        """The live postmaster's pid, removing a pid file left by a dead server."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            comm = ""
        if comm in ("postgres", "postmaster"):
            return pid
        # The pid is dead or now belongs to another program (common after a reboot):
        # PostgreSQL would refuse to start on it, so it goes.
        pid_file.unlink(missing_ok=True)
        return None

    # -- lifecycle -------------------------------------------------------------------

    def status(self) -> ClusterStatus:
        initialized = (self.pgdata / "PG_VERSION").exists()
        pid = self._pid() if initialized else None
        return ClusterStatus(self.base, initialized, pid is not None, pid, self.settings.port)

    def init(self) -> bool:
        """Create the cluster if it does not exist. Returns True when it was created."""
        if (self.pgdata / "PG_VERSION").exists():
            if not credentials_path(self.settings).exists():
                raise DatabaseSetupError(
                    f"{self.pgdata} holds a cluster but {credentials_path(self.settings)} is "
                    "missing, so its passwords are unknown. Remove the data dir to start over."
                )
            return False
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o755)
        self._check_reachable()
        for path, mode in (
            (self.pgdata, 0o700),
            (self.run_dir, 0o755),
            (self.log_file.parent, 0o755),
        ):
            path.mkdir(parents=True, exist_ok=True)
            self._own(path, mode)
        creds = Credentials(
            admin=secrets.token_urlsafe(24),
            writer=secrets.token_urlsafe(24),
            reader=secrets.token_urlsafe(24),
        )
        pwfile = self.run_dir / "initdb.pw"
        pwfile.unlink(missing_ok=True)
        # Created 0600: never readable by others, not even between a write and a chmod.
        with os.fdopen(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(creds.admin + "\n")
        self._own(pwfile, 0o600)
        try:
            self._run(
                str(self.bin / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                ADMIN_ROLE,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        creds.save(credentials_path(self.settings))
        return True

    def _server_options(self) -> str:
        s = self.settings
        options = {
            "listen_addresses": s.host,
            "port": str(s.port),
            "unix_socket_directories": str(self.run_dir),
            "shared_buffers": s.shared_buffers,
            # pgstac's to_text() is declared COST 5000, which triggers LLVM JIT and makes
            # single upserts 10-20x slower (research: pgstac-stack.md §3).
            "jit": "off",
            "max_connections": str(max_connections()),
            "maintenance_work_mem": "256MB",
            "max_wal_size": "2GB",
            "log_min_messages": "warning",
        }
        return " ".join(f"-c {key}={value}" for key, value in options.items())

    def start(self) -> bool:
        """Start the server if it is not running. Returns True when it was started."""
        if self.status().running:
            return False
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.pgdata),
            "-l",
            str(self.log_file),
            "-o",
            self._server_options(),
            "-w",
            "-t",
            "60",
            "start",
        )
        return True

    def stop(self, mode: str = "fast") -> bool:
        """Stop the server. Returns True when it was running."""
        status = self.status()
        if not status.running:
            return False
        proc = self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "stop", check=False
        )
        if proc.returncode != 0 and status.pid:
            os.kill(status.pid, signal.SIGQUIT)
        return True

    def destroy(self) -> None:
        """Stop the server and delete everything under the data dir."""
        self.stop(mode="immediate")
        shutil.rmtree(self.base, ignore_errors=True)
