"""A site published read-only over HTTP(S) by any static web server (requests).

Partial downloads resume with ``Range`` requests guarded by ``If-Range`` on
the ETag the first response carried, so a file that changed on the server
is fetched again from the start rather than spliced. Sizes are checked
against ``Content-Length``/``Content-Range``; the caller checks xxh3.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import requests

from federation.datastore.checksum import CHUNK
from federation.transport.base import (
    Counters,
    MissingFileError,
    OnBytes,
    PartialDownload,
    RemoteFile,
    Transport,
    TransportError,
    remote_join,
)
from federation.transport.retry import RetryPolicy, TransientError

RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
MAX_REDIRECTS = 5
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class HTTPSettings:
    """The ``http:`` block of a site definition."""

    url: str
    verify: bool | str = True  # False, or a CA bundle path, for private certificates
    timeout: float = 30.0
    retry: RetryPolicy = RetryPolicy()


def base_url(url: str) -> str:
    """``url`` checked and ending with a slash, so that paths join under it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TransportError(f"{url!r} is not an http:// or https:// URL")
    return url if url.endswith("/") else url + "/"


class HTTPTransport(Transport):
    """Files under a base URL; read-only."""

    def __init__(self, settings: HTTPSettings, *, url: str | None = None) -> None:
        self.settings = settings
        self.base = base_url(url or settings.url)
        self.counters = Counters()
        self._local = threading.local()  # one requests.Session per worker thread
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def describe(self) -> str:
        return self.base

    @property
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.max_redirects = MAX_REDIRECTS
            session.verify = self.settings.verify
            session.headers["User-Agent"] = "federation"
            session.headers["Accept-Encoding"] = "identity"  # sizes are of the bytes stored
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def url(self, path: str) -> str:
        return urljoin(self.base, quote(remote_join("", path)))

    def _request(self, method: str, url: str, headers: dict[str, str] | None = None
                 ) -> requests.Response:
        """One request; network failures and 5xx are transient, other errors are not."""
        try:
            response = self._session.request(method, url, headers=headers, stream=True,
                                             timeout=self.settings.timeout)
        except requests.TooManyRedirects:
            raise TransportError(f"{url}: more than {MAX_REDIRECTS} redirects") from None
        except requests.exceptions.SSLError as exc:
            raise TransportError(f"{url}: TLS verification failed ({exc})") from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(f"{url}: {_short(exc)}") from None
        if response.status_code in RETRY_STATUS:
            response.close()
            raise TransientError(f"{url}: HTTP {response.status_code} {response.reason}")
        return response

    def _call(self, what: str, func):
        return self.settings.retry.call(what, func)

    def stat(self, path: str) -> RemoteFile | None:
        url = self.url(path)

        def head() -> RemoteFile | None:
            with self._request("HEAD", url) as response:
                if response.status_code == 404:
                    return None
                _raise_for(response, url)
                return RemoteFile(path, int(response.headers.get("Content-Length", 0)))
        return self._call(f"stat {url}", head)

    def get(self, path: str, local: Path) -> None:
        self.fetch(path, local)

    def fetch(self, path: str, local: Path, *, resume: bool = False,
              on_bytes: OnBytes | None = None, size: int | None = None) -> tuple[int, str]:
        url = self.url(path)
        etag_file = local.with_name(local.name + ".etag")
        download = PartialDownload(local, resume=resume, on_bytes=on_bytes)
        etag = etag_file.read_text() if download.offset and etag_file.is_file() else None
        had_etag_file = etag is not None
        if download.offset and etag is None:
            download.restart()  # nothing to prove the bytes there are this file's
        state = {"etag": etag}

        def attempt() -> None:
            headers = {}
            if download.offset:
                headers = {"Range": f"bytes={download.offset}-", "If-Range": state["etag"]}
            with self._request("GET", url, headers) as response:
                if response.status_code == 404:
                    raise FileNotFoundError(url)
                if response.status_code == 416:  # asked for bytes past the end
                    download.restart()
                    raise TransientError("the partial download is longer than the file")
                _raise_for(response, url)
                total = _expected_total(response, download)
                tag = response.headers.get("ETag")
                if tag is not None and state["etag"] not in (None, tag):
                    download.restart()  # changed on the server between attempts
                    raise TransientError("the file changed on the server during the download")
                state["etag"] = tag
                try:
                    for chunk in response.iter_content(CHUNK):
                        download.write(chunk)
                except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                        requests.Timeout) as exc:
                    raise TransientError(f"connection lost: {_short(exc)}") from None
                if total is not None and download.offset != total:
                    raise TransientError(f"got {download.offset} of {total} bytes")

        try:
            self._call(f"download {url}", attempt)
        except FileNotFoundError:
            download.close()
            local.unlink(missing_ok=True)
            raise MissingFileError(f"{path} is missing at the source (HTTP 404 from {url})") \
                from None
        except BaseException:
            if download.offset and state["etag"]:  # what a later resume must match
                etag_file.write_text(state["etag"])
            download.abandon()
            raise
        self.counters.resumed(download.resumed)
        if had_etag_file:
            etag_file.unlink(missing_ok=True)
        return download.close()

    def put(self, local: Path, path: str) -> None:
        raise TransportError(f"{self.base} is published read-only over HTTP; cannot write "
                             f"{path}")

    def delete(self, path: str) -> None:
        raise TransportError(f"{self.base} is published read-only over HTTP; cannot delete "
                             f"{path}")

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()


def _expected_total(response: requests.Response, download: PartialDownload) -> int | None:
    """The final size, after matching a 206's range to what we have (200: start over)."""
    if response.status_code == 206:
        match = _RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != download.offset:
            download.restart()
            raise TransientError("the server answered a different byte range than asked")
        download.resumed = download.offset
        return None if match.group(3) == "*" else int(match.group(3))
    if download.offset:
        download.restart()  # 200 to a Range + If-Range request: the file changed
    length = response.headers.get("Content-Length")
    return int(length) if length is not None and length.isdigit() else None


def _raise_for(response: requests.Response, url: str) -> None:
    code = response.status_code
    if code in (200, 206):
        return
    if code in (401, 403):
        raise TransportError(f"{url}: access denied (HTTP {code} {response.reason})")
    raise TransportError(f"{url}: HTTP {code} {response.reason}")


def _short(exc: BaseException) -> str:
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if match:
        return match.group(1)
    return text.splitlines()[0][:200] if text else type(exc).__name__
