"""A real Dovecot IMAP server on a loopback port for the tests: installed from Debian's
dovecot-imapd when missing, configured from scratch under a temporary directory (its own
base dir, log, passwd-file users and maildirs; plaintext login on loopback only), started
with `dovecot -c CONFIG` and stopped at the end. If it cannot run, the test fails loudly.

    from tests.support.dovecot import dovecot  # the session fixture; then `imap_folder`
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from imapclient import IMAPClient

USER = "support@example.test"
PASSWORD = "imap-test-password"
MAIL_USER = "nobody"  # mail processes may not run as root; any unprivileged account will do

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
instance_name = casegate-test-{port}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
mail_max_userip_connections = 500
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
protocol imap {{
  mail_max_userip_connections = 500
}}
"""


@dataclass(frozen=True)
class Dovecot:
    host: str
    port: int
    user: str
    password: str
    root: Path

    def url(self, folder: str = "INBOX") -> str:
        return (
            f"imap://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(folder)}"
        )

    def mailbox_name(self, folder: str) -> str:
        """How the watcher names the mailbox in dedupe keys, metrics and leases."""
        return f"{self.user}@{self.host}:{self.port}/{folder}"

    def client(self) -> IMAPClient:
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=30)
        client.login(self.user, self.password)
        return client


def _install() -> str:
    found = shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None
    )
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "dovecot-imapd"]
    done = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:  # stale package lists: refresh once and try again
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
        done = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
    found = shutil.which("dovecot") or "/usr/sbin/dovecot"
    if done.returncode != 0 or not os.path.exists(found):
        pytest.fail(f"could not install dovecot-imapd: {done.stderr[-2000:]}", pytrace=False)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            return conn.recv(64).startswith(b"* OK")
    except OSError:
        return False


def start_dovecot(root: Path, extra: str = "") -> tuple[Dovecot, Path]:
    """Configure and start a Dovecot under `root` (`extra`: more config lines); returns it
    and its config path."""
    binary = _install()
    account = pwd.getpwnam(MAIL_USER)
    port = _free_port()
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("mail", "home"):
        (root / sub).mkdir(exist_ok=True)
        os.chown(root / sub, account.pw_uid, account.pw_gid)
    root.chmod(0o755)  # the mail processes run unprivileged and must reach their maildirs
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    config = root / "dovecot.conf"
    text = CONFIG.format(root=root, port=port, uid=account.pw_uid, gid=account.pw_gid)
    config.write_text(text + extra)
    # The master daemonizes; its children keep inherited pipes open, so no capture here.
    with open(root / "start.err", "w") as err:
        started = subprocess.run(
            [binary, "-c", str(config)], stdin=subprocess.DEVNULL, stdout=err, stderr=err,
            check=False, timeout=30,
        )
    deadline = time.monotonic() + 20
    while not _answers(port):
        if time.monotonic() > deadline or started.returncode != 0:
            log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
            pytest.fail(
                f"dovecot did not start on port {port}: {(root / 'start.err').read_text()}\n"
                f"{log[-3000:]}",
                pytrace=False,
            )
        time.sleep(0.1)
    return Dovecot("127.0.0.1", port, USER, PASSWORD, root), config


def stop_dovecot(root: Path, config: Path) -> None:
    subprocess.run(
        ["doveadm", "-c", str(config), "stop"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        check=False, timeout=30,
    )
    pid_file = root / "run" / "master.pid"
    deadline = time.monotonic() + 10
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_file.exists():  # it did not go: end the master we started, by its own pid
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        except (OSError, ValueError):
            pass


@contextmanager
def running_dovecot(extra: str = "") -> Iterator[Dovecot]:
    root = Path(tempfile.mkdtemp(prefix="casegate-dovecot-"))
    server, config = start_dovecot(root, extra)
    try:
        yield server
    finally:
        stop_dovecot(root, config)
        shutil.rmtree(root, ignore_errors=True)


def kick(server: Dovecot) -> None:
    """Drop every IMAP connection of the test user, as a server restart would."""
    subprocess.run(
        ["doveadm", "-c", str(server.root / "dovecot.conf"), "kick", server.user],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        check=True, timeout=30,
    )


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server


@pytest.fixture
def imap_folder(dovecot: Dovecot) -> Iterator[str]:
    """A fresh, empty folder for one test (deleted afterwards)."""
    folder = f"t{uuid.uuid4().hex[:10]}"
    with dovecot.client() as client:
        client.create_folder(folder)
    yield folder
    try:
        with dovecot.client() as client:
            client.delete_folder(folder)
    except Exception:  # noqa: BLE001 - the server is stopped at the end of the run anyway
        pass
