"""FTP and FTPS: download and upload files with globs (ftplib).

    FTPGet("download", conn_id="archive", remote="/out/{{ ds_nodash }}_*.zip", local_dir="/srv/in")
    FTPPut("deliver", conn_id="client", local="/srv/out/{{ ds }}.csv", remote_dir="/in")

`ftp://` connections speak plain FTP; `ftps://` ones switch to TLS before logging in (explicit
FTPS, AUTH TLS) and protect the data channel too (PROT P). The server certificate is checked
against the system CAs or the connection's `ca_file` (`verify=false` turns the check off).
Passive mode unless the connection says `passive=false`.

As with SFTP, only the file-name part of a remote path may hold wildcards, a download is renamed
into place once complete, an upload is stored as `.NAME.part` and renamed on the server, and both
return the list of files they wrote.
"""

from __future__ import annotations

import ftplib
import logging
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from fnmatch import fnmatchcase

from cronflow.connections import Connection
from cronflow.errors import CronflowError
from cronflow.ops.network import UnreachableError, error_words, unreachable_words
from cronflow.ops.transfer import (
    Download,
    Upload,
    split_remote_pattern,
)

log = logging.getLogger("cronflow.ftp")

FTP_TYPES = ("ftp", "ftps")
TIMEOUT_S = 60.0


class FTPError(CronflowError):
    """An FTP server cannot be reached, refused the login, or a transfer failed."""


@contextmanager
def open_ftp(conn: Connection) -> Iterator[ftplib.FTP]:
    """A logged-in FTP (or FTPS with a protected data channel) session; UnreachableError when
    the server cannot be reached now, FTPError otherwise."""
    where = f"connection '{conn.conn_id}'"
    timeout = float(conn.extra.get("timeout", TIMEOUT_S))
    ftp = (
        ftplib.FTP_TLS(context=conn.tls_context(), timeout=timeout)
        if conn.conn_type == "ftps"
        else ftplib.FTP(timeout=timeout)
    )
    try:
        ftp.connect(conn.host or "", conn.port_or_default)
        ftp.login(conn.login or "anonymous", conn.password or "")
        if isinstance(ftp, ftplib.FTP_TLS):
            ftp.prot_p()
        ftp.set_pasv(conn.flag("passive", True))
    except ftplib.error_perm as exc:
        ftp.close()
        raise FTPError(f"{where}: {conn.describe()} refused the login: {exc}") from None
    except (ftplib.Error, OSError, EOFError) as exc:
        ftp.close()
        words = unreachable_words(exc, conn.host or "", conn.port_or_default, timeout)
        if words is not None:
            raise UnreachableError(f"{where}: {words}") from None
        raise FTPError(
            f"{where}: cannot connect to {conn.describe()}: {error_words(exc)}"
        ) from None
    try:
        yield ftp
    finally:
        with suppress(ftplib.Error, OSError, EOFError):
            ftp.quit()
        ftp.close()


def remote_glob(ftp: ftplib.FTP, pattern: str) -> list[str]:
    """Files matching a remote path whose file name may hold wildcards, sorted."""
    directory, name = split_remote_pattern(pattern)
    try:
        entries = [(n, facts.get("type", "file")) for n, facts in ftp.mlsd(directory or ".")]
    except ftplib.error_perm:  # no MLSD: a name listing (directories cannot be told apart)
        try:
            entries = [(posixpath.basename(n), "file") for n in ftp.nlst(directory or ".")]
        except ftplib.error_perm:
            return []
    return sorted(
        posixpath.join(directory, n)
        for n, kind in entries
        if kind == "file" and fnmatchcase(n, name)
    )


class FTPFiles:
    """An FTP session as the transfer loops use it; a failed transfer is an FTPError."""

    def __init__(self, ftp: ftplib.FTP, conn: Connection) -> None:
        self.ftp, self.conn = ftp, conn

    def glob(self, pattern: str) -> list[str]:
        return remote_glob(self.ftp, pattern)

    def download(self, remote: str, local: str) -> None:
        try:
            with open(local, "wb") as handle:
                self.ftp.retrbinary(f"RETR {remote}", handle.write)
        except ftplib.Error as exc:
            raise FTPError(f"cannot download {remote} from {self.conn.describe()}: {exc}") from None

    def upload(self, local: str, partial: str, final: str) -> None:
        try:
            with open(local, "rb") as handle:
                self.ftp.storbinary(f"STOR {partial}", handle)
            _rename(self.ftp, partial, final)
        except ftplib.Error as exc:
            raise FTPError(f"cannot upload {local} to {self.conn.describe()}: {exc}") from None


@contextmanager
def ftp_files(conn: Connection) -> Iterator[FTPFiles]:
    with open_ftp(conn) as ftp:
        yield FTPFiles(ftp, conn)


class FTPGet(Download):
    """Download remote files (a path or a glob) into a local directory."""

    kind = "ftp_get"
    conn_types, log, session = FTP_TYPES, log, staticmethod(ftp_files)


class FTPPut(Upload):
    """Upload local files (a path or a glob) into a remote directory."""

    kind = "ftp_put"
    conn_types, log, session = FTP_TYPES, log, staticmethod(ftp_files)


def _rename(ftp: ftplib.FTP, source: str, target: str) -> None:
    """RNFR/RNTO; servers that refuse to rename onto an existing file get it deleted first."""
    try:
        ftp.rename(source, target)
    except ftplib.error_perm:
        with suppress(ftplib.error_perm):
            ftp.delete(target)
        ftp.rename(source, target)


def check(conn: Connection) -> str:
    """`cronflow conn test` for ftp:// and ftps://: log in and ask for the current directory."""
    with open_ftp(conn) as ftp:
        where = ftp.pwd()
    tls = " over TLS" if conn.conn_type == "ftps" else ""
    return f"logged in to {conn.describe()}{tls} (directory {where})"
