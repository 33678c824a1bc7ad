"""A site published read-only over HTTP(S) by any static web server (requests).

Partial downloads resume with ``Range`` requests guarded by ``If-Range`` on
the ETag the first response carried, so a file that changed on the server
is fetched again from the start rather than spliced. Sizes are checked
against ``Content-Length``/``Content-Range``; the caller checks xxh3.
Files are listed through nginx's JSON directory index
(``autoindex on; autoindex_format json;``), read with a bounded size.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import requests

from federation.datastore.checksum import CHUNK
from federation.transport.base import (
    MAX_LISTING,
    Counters,
    Entry,
    MissingFileError,
    OnBytes,
    PartialDownload,
    RemoteFile,
    Transport,
    TransportError,
    remote_join,
    walk,
)
from federation.transport.retry import RetryPolicy, TransientError

RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
MAX_REDIRECTS = 5
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_DIGITS = re.compile(r"[0-9]{1,19}")
DEFAULT_RETRY = RetryPolicy()
_LISTING_HINT = "list files over HTTP with nginx 'autoindex on; autoindex_format json;'"


def base_url(url: str) -> str:
    """``url`` checked and ending with a slash, so that paths join under it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TransportError(f"{url!r} is not an http:// or https:// URL")
    return url if url.endswith("/") else url + "/"


class HTTPTransport(Transport):
    """Files under the base URL ``url``; read-only. ``verify`` is False or a CA bundle path
    for private certificates; ``timeout`` is per request, ``retry`` bounds the retries of
    transient failures (network errors, 5xx, 429)."""

    writable = False
    max_listing = MAX_LISTING

    def __init__(self, url: str, *, verify: bool | str = True, timeout: float = 30.0,
                 retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self.base = base_url(url)
        self.verify = verify
        self.timeout = timeout
        self.retry = retry
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
            session.verify = self.verify
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
                                             timeout=self.timeout)
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
        return self.retry.call(what, func)

    def stat(self, path: str) -> RemoteFile | None:
        url = self.url(path)

        def head() -> RemoteFile | None:
            with self._request("HEAD", url) as response:
                if response.status_code == 404 or _is_directory(response, url):
                    return None
                _raise_for(response, url)
                length = response.headers.get("Content-Length", "0")
                if not _DIGITS.fullmatch(length):
                    raise TransportError(f"{url}: invalid Content-Length {length[:40]!r}")
                return RemoteFile(path, int(length))
        return self._call(f"stat {url}", head)

    def get(self, path: str, local: Path) -> None:
        self.fetch(path, local)

    def fetch(self, path: str, local: Path, *, resume: bool = False,
              on_bytes: OnBytes | None = None, size: int | None = None) -> tuple[int, str]:
        url = self.url(path)
        etag_file = local.with_name(local.name + ".etag")
        download = PartialDownload(local, resume=resume, on_bytes=on_bytes)
        etag = etag_file.read_text() if download.offset and etag_file.is_file() else None
        if download.offset and etag is None:
            download.restart()  # nothing to prove the bytes there are this file's
        state = {"etag": etag}
        if download.offset and download.offset == size:  # complete already: the caller
            etag_file.unlink(missing_ok=True)             # checks it, as any download
            return download.close()

        def attempt() -> None:
            headers = {}
            if download.offset:
                headers = {"Range": f"bytes={download.offset}-", "If-Range": state["etag"]}
            with self._request("GET", url, headers) as response:
                if response.status_code == 404 or _is_directory(response, url):
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
                if tag is not None and tag != state["etag"]:
                    # Noted before the first byte lands: a download killed outright (kill -9,
                    # a power cut) can still be resumed, and only against this version.
                    etag_file.write_text(tag)
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
        etag_file.unlink(missing_ok=True)
        return download.close()

    def put(self, local: Path, path: str) -> None:
        raise TransportError(f"{self.base} is published read-only over HTTP; cannot write "
                             f"{path}")

    def delete(self, path: str) -> None:
        raise TransportError(f"{self.base} is published read-only over HTTP; cannot delete "
                             f"{path}")

    def rename(self, src: str, dst: str) -> None:
        raise TransportError(f"{self.base} is published read-only over HTTP; cannot rename "
                             f"{src}")

    def list(self, prefix: str = "") -> Iterator[RemoteFile]:
        """One JSON directory index per directory, at most ``max_listing`` bytes each. The
        server follows links, so a link loop there ends at the depth limit, with an error."""
        return walk(self._scan, prefix, self.base)

    def _scan(self, directory: str) -> list[Entry]:
        url = urljoin(self.base, quote(directory) + "/") if directory else self.base

        def attempt() -> bytes:
            with self._request("GET", url) as response:
                if response.status_code == 404:
                    raise FileNotFoundError(url)
                if response.status_code == 403:
                    raise TransportError(f"{url}: the server offers no directory listing "
                                         f"(HTTP 403); {_LISTING_HINT}")
                _raise_for(response, url)
                return _read_bounded(response, self.max_listing, url)

        return _parse_listing(self._call(f"list {url}", attempt), url)

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()


def _is_directory(response: requests.Response, url: str) -> bool:
    """Whether a file's URL led to a directory (a redirect to the name with a "/")."""
    return not url.endswith("/") and response.url.endswith("/")


def _read_bounded(response: requests.Response, limit: int | None, url: str) -> bytes:
    length = response.headers.get("Content-Length", "")
    if limit is not None and _DIGITS.fullmatch(length) and int(length) > limit:
        raise TransportError(f"{url}: the directory listing is larger than {limit} bytes")
    body = bytearray()
    try:
        for chunk in response.iter_content(CHUNK):
            body += chunk
            if limit is not None and len(body) > limit:
                raise TransportError(f"{url}: the directory listing is larger than {limit} "
                                     "bytes")
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
            requests.Timeout) as exc:
        raise TransientError(f"connection lost: {_short(exc)}") from None
    return bytes(body)


def _parse_listing(body: bytes, url: str) -> list[Entry]:
    """The entries of an nginx JSON directory index; names and sizes are checked later.
    Each JSON object becomes a small tuple as it is decoded (or None for what is not a
    file or a directory), so a large listing does not also cost a dict per entry."""
    try:
        items = json.loads(body, object_hook=_entry)
    except (ValueError, RecursionError):
        items = None
    if not isinstance(items, list):
        raise TransportError(f"{url}: the directory listing is not a JSON index; "
                             f"{_LISTING_HINT}")
    for item in items:
        if item is not None and not isinstance(item, tuple):
            raise TransportError(f"{url}: the directory listing holds a malformed entry "
                                 f"{str(item)[:80]!r}")
    return [item for item in items if item is not None]


def _entry(item: dict) -> Entry | None:
    kind = item.get("type")
    if kind == "directory":
        return item.get("name"), True, None
    if kind == "file":
        return item.get("name"), False, item.get("size")
    return None  # "other" (sockets, devices) and anything unknown: not files of the site


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
