"""Stores read where they live: object storage (S3 and S3-compatible servers, GCS, Azure) and
web servers, through ranged GETs.

:class:`RemoteSource` is the :class:`~h5store._source.ByteSource` of a URL; every read is a
request, so a batch is one round of requests: neighbouring ranges closer than ``gap`` bytes
are merged into one request and the rest are sent concurrently (at most ``concurrency`` in
flight). :class:`RemoteFile` is the file object h5py opens for the HDF5 metadata: a block
cache in front of the source that is filled, before HDF5 reads anything, with the head and
the tail of the file in one round (see :func:`open_hdf5`).

The client is obstore (the Rust ``object_store`` crate): measured on this machine
(2026-12-06, SeaweedFS 4.48 on 127.0.0.1, 2 shared cores at load 5.7, 256 random 14 kB ranges
of a 167 MB object, medians of 7), obstore 1.3-2.0 s per batch with one asyncio task a range
(8-128 in flight: the server's CPU is the bound), s3fs's ``cat_ranges`` 1.56 s, obstore's own
``get_ranges`` 0.65 s only because it merges ranges up to 1 MiB apart (reading 30 x the
bytes). obstore is no slower than s3fs, needs no aiohttp/botocore stack, speaks S3, GCS,
Azure, HTTP and local files with one API, and reads the usual ``AWS_*`` variables; the
merging is done here, with a gap that keeps the bytes read close to the bytes asked for
(``get_ranges`` is called with its own merging off). Only its blocking calls are used, so no
Python code runs on its threads, and a thread inside HDF5 sends its own requests (see
:func:`_holding_hdf5_lock`). It is imported only when a URL is opened (the ``remote`` extra).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import re
import struct
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeGuard, TypeVar
from urllib.parse import SplitResult, quote, urlsplit, urlunsplit

from ._source import Buffer
from ._superblock import _SIGNATURE, SUPERBLOCK_BYTES, SWMR_WRITE_FLAG, lookup3
from .errors import (
    FormatError,
    H5StoreError,
    InvalidInputError,
    NotAStoreError,
    RecoveryNeededError,
    RemoteReadError,
    StoreNotFoundError,
)

if TYPE_CHECKING:  # h5py is imported where a file is opened (import h5store stays light)
    from concurrent.futures import ThreadPoolExecutor

    import h5py

T = TypeVar("T")

#: URL schemes opened remotely (``file://`` too: the same path as a remote store, for tests
#: and for checking what a store will look like once copied).
SCHEMES = ("s3", "s3a", "gs", "az", "abfs", "abfss", "azure", "http", "https", "file")

#: Ranges closer than this are fetched as one request. Measured (SeaweedFS on 127.0.0.1, 256
#: random 14 kB payloads of a 167 MB object, 5 batches each): a gap of 0 / 16 / 64 / 256 /
#: 1024 kB sent 251 / 248 / 232 / 172 / 52 requests reading 1.00 / 1.02 / 1.18 / 3.7 / 23 x
#: the bytes asked for. Only 16 kB keeps the bytes within the 1.05 x target, and neighbours
#: that close (a class's images written together and read together) still share a request.
DEFAULT_GAP = 16 << 10
#: Requests in flight at once per read_ranges round: all of a batch of 256 ids at once (one
#: wave; each wave waits a round trip, and each new connection one more for its handshake).
#: Measured (2026-12-07, SeaweedFS on 127.0.0.1 behind benchmarks/delay_proxy.py, open +
#: get_batch of 256 random ids of 5,000 14 kB images, ~255 requests, a new store each time so
#: every connection is new; medians of 15, alternated in 3 rounds, 2 cores at load 1-2):
#: concurrency 256 / 128 / 64: 194-209 / 243-257 / 276-286 ms at a 20 ms round trip (the
#: asyncio client this one replaced, at 64: 269-280), 190-203 / 197-201 / 176-215 ms at 0 ms.
#: The local server's CPU (~1 ms a request) is most of a batch here; over a real network the
#: waves are. It was 64 for a while only because of a hang later found to be a deadlock on
#: h5py's lock (see _holding_hdf5_lock), not the setting.
DEFAULT_CONCURRENCY = 256
#: Requests one obstore get_ranges call has in flight (object_store's
#: OBJECT_STORE_COALESCE_PARALLEL): a round of more is split among threads, this many each.
OBSTORE_PARALLEL = 10
#: Retries of a failed request (connection refused or reset, 5xx, timeout), with exponential
#: backoff from 50 ms, all within RETRY_SECONDS; then RemoteReadError.
DEFAULT_RETRIES = 3
RETRY_SECONDS = 10.0
#: A request with no answer for this long fails (and is retried).
TIMEOUT = "30s"
CONNECT_TIMEOUT = "5s"
# fsspec/s3fs spellings of the options, as users of h5py + fsspec pass them
_ALIASES = {
    "key": "access_key_id",
    "secret": "secret_access_key",
    "token": "session_token",
    "endpoint_url": "endpoint",
    "region_name": "region",
    "aws_access_key_id": "access_key_id",
    "aws_secret_access_key": "secret_access_key",
    "aws_session_token": "session_token",
    "aws_endpoint_url": "endpoint",
    "aws_region": "region",
}
# options for obstore's HTTP client rather than the store's configuration
_CLIENT_KEYS = {"allow_http", "timeout", "connect_timeout", "allow_invalid_certificates"}
_SECRET_WORDS = re.compile(r"secret|token|password|signature|credential|sas|key", re.I)


def is_url(path: object) -> TypeGuard[str]:
    """Whether ``path`` is a URL h5store opens remotely (``s3://...``, ``https://...``)."""
    if not isinstance(path, str):
        return False
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def public_url(url: str) -> str:
    """The URL as error messages and reprs show it: no user:password, no query (a presigned
    URL's query is its credential)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _import_obstore() -> Any:  # (the obstore module)
    try:
        import obstore
        import obstore.store
    except ImportError:
        raise H5StoreError(
            "reading a store by URL needs obstore: pip install 'h5store[remote]'"
        ) from None
    return obstore


def _split_options(storage_options: dict[str, Any] | None) -> tuple[dict, dict]:
    config: dict[str, Any] = {}
    client: dict[str, Any] = {}
    for key, value in (storage_options or {}).items():
        if not isinstance(key, str):
            raise H5StoreError(f"storage_options keys must be strings, got {key!r}")
        name = _ALIASES.get(key.lower(), key.lower())
        if name in _CLIENT_KEYS:
            client[name] = str(value).lower() if isinstance(value, bool) else value
        else:
            config[name] = value
    return config, client


def _make_store(url: str, storage_options: dict[str, Any] | None, retries: int) -> tuple[Any, str]:
    """(obstore store, path of the object in it)."""
    obstore = _import_obstore()
    stores = obstore.store
    config, client = _split_options(storage_options)
    client.setdefault("timeout", TIMEOUT)
    # obstore takes allow_http from the environment only when given no client options
    endpoint = str(config.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL", ""))
    allow = os.environ.get("AWS_ALLOW_HTTP", "true" if endpoint.startswith("http:") else "")
    if allow:
        client.setdefault("allow_http", allow.lower())
    client.setdefault("connect_timeout", CONNECT_TIMEOUT)
    retry = {
        "max_retries": retries,
        "backoff": {
            "init_backoff": timedelta(milliseconds=50),
            "max_backoff": timedelta(seconds=2),
            "base": 2.0,
        },
        "retry_timeout": timedelta(seconds=RETRY_SECONDS),
    }
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    path = parts.path.lstrip("/")
    try:
        if scheme == "file":
            folder, name = os.path.split(os.path.abspath(parts.path))
            return stores.LocalStore(folder), name
        if scheme in ("http", "https"):
            if scheme == "http":
                client["allow_http"] = "true"  # asked for by the URL itself
            base, _, name = url.rpartition("/")
            if not name:
                raise H5StoreError(f"{public_url(url)} names no file")
            return stores.HTTPStore.from_url(
                base + "/", client_options=client, retry_config=retry
            ), name
        if not parts.netloc or not path:
            raise H5StoreError(f"{public_url(url)}: expected {scheme}://bucket/key")
        kinds = {"s3": stores.S3Store, "s3a": stores.S3Store, "gs": stores.GCSStore}
        if scheme in kinds:
            store = kinds[scheme](
                parts.netloc, config=config or None, client_options=client, retry_config=retry
            )
        else:  # az://container/key (account from AZURE_STORAGE_ACCOUNT_NAME or options)
            store = stores.AzureStore(
                parts.netloc, config=config or None, client_options=client, retry_config=retry
            )
        return store, path
    except H5StoreError:
        raise
    except Exception as exc:  # obstore refuses an option or a URL before any request
        raise H5StoreError(
            f"{public_url(url)}: cannot set up the client: {_scrub(str(exc), storage_options)}"
        ) from None


def _secrets(storage_options: dict[str, Any] | None) -> list[str]:
    values = [str(v) for k, v in (storage_options or {}).items() if _SECRET_WORDS.search(str(k))]
    values += [v for k, v in os.environ.items() if _SECRET_WORDS.search(k) and k[:3] in _ENV]
    return [v for v in values if len(v) >= 4]


_ENV = ("AWS", "GOO", "AZU")


def _scrub(text: str, storage_options: dict[str, Any] | None) -> str:
    """``text`` without credentials: known secret values masked, query strings cut (presigned
    signatures), and only the first line (obstore appends a debug dump)."""
    text = text.split("\n\nDebug source:")[0].strip()
    code = re.search(r"<Code>([^<]{1,100})</Code>", text)
    text = text.split(": <")[0] + (f" ({code.group(1)})" if code else "")
    for secret in _secrets(storage_options):
        text = text.replace(secret, "***")
    text = re.sub(r"\?[^\s\"'<>]*", "", text)
    return text[:500]


def _holding_hdf5_lock() -> bool:
    """Whether this thread is inside h5py (HDF5 reading a RemoteFile, a chunk_iter callback),
    holding h5py's one lock. Such a thread must wait on no other Python thread: any thread's
    cyclic garbage collection may finalize an h5py object, whose finalizer takes that lock,
    so the thread waited on can itself be waiting for this one, for good. Two CI runs hung
    so, each for 120 s: the event loop that ran the requests had collected an h5py object
    while the reader it was answering held the lock (reproduced at will with a thread
    leaving h5py objects in reference cycles)."""
    from h5py._objects import phil

    is_owned = getattr(phil, "_is_owned", None)  # (h5py's FastRLock; absent: assume held)
    return True if is_owned is None else bool(is_owned())


class _Threads:
    """A client's threads, started by the first round that needs them and kept from one read
    to the next: a standard-library client's each hold their connection, so a batch after the
    first opens none, where a pool per batch opened one per request (a TCP handshake, a round
    trip, each; on this machine's 20 ms proxy a forked loader worker's batch of 64 random ids
    waited 2 round trips a wave)."""

    def __init__(self, count: int):
        self.count = count
        self._pool: ThreadPoolExecutor | None = None

    def __call__(self) -> ThreadPoolExecutor:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.count, thread_name_prefix="h5store-remote")
        return self._pool

    def close(self) -> None:
        """Let the threads end once their calls are done (and, in a standard-library client,
        close their connections), rather than when the garbage collector finds the client: a
        reader by URL makes a new source at every refresh."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


def _gather(calls: Sequence[Callable[[], Any]], threads: _Threads) -> list:
    """The answers of ``calls``, concurrently on ``threads()``; one after another on this
    thread where there is one, or where this thread holds h5py's lock (see above)."""
    if len(calls) <= 1 or _holding_hdf5_lock():
        return [call() for call in calls]
    return list(threads().map(lambda call: call(), calls))


def merge_ranges(
    offsets: Sequence[int], sizes: Sequence[int], gap: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int, int]]]:
    """Requests for ``offsets``/``sizes``: (start, end) of each merged request, and per range
    (request number, start within the request's bytes, size), in the order given. Ranges
    whose gap to the previous one (in file order) is at most ``gap`` share its request."""
    order = sorted(range(len(offsets)), key=offsets.__getitem__)
    requests: list[list[int]] = []
    where: list[tuple[int, int, int]] = [(0, 0, 0)] * len(offsets)
    for k in order:
        start, end = offsets[k], offsets[k] + sizes[k]
        if requests and start - requests[-1][1] <= gap:
            requests[-1][1] = max(requests[-1][1], end)
        else:
            requests.append([start, end])
        where[k] = (len(requests) - 1, start - requests[-1][0], sizes[k])
    return [(s, e) for s, e in requests], where


#: Processes that have used obstore (a child forked from one of them cannot: see
#: RemoteSource._client).
_OBSTORE_USERS: set[int] = set()


class _ObstoreClient:
    """Requests through obstore's blocking calls, which wait in Rust with the GIL released
    (no Python code runs on obstore's own threads): a round of at most OBSTORE_PARALLEL
    requests on the calling thread, a larger one split among this client's threads."""

    def __init__(self, store: Any, path: str, concurrency: int):
        import obstore

        self._obstore, self._store, self._path = obstore, store, path
        self.threads = _Threads(-(-concurrency // OBSTORE_PARALLEL))

    def kind(self, exc: BaseException) -> str:
        errors = self._obstore.exceptions
        if isinstance(exc, (FileNotFoundError, errors.NotFoundError)):
            return "missing"
        if isinstance(exc, (errors.PermissionDeniedError, errors.UnauthenticatedError)):
            return "denied"
        return "failed"

    def size(self) -> int:
        return int(self._obstore.head(self._store, self._path)["size"])

    def head_tail(self, head: int, tail: int) -> tuple[bytes, bytes, int]:
        obstore, store, path = self._obstore, self._store, self._path

        def last() -> tuple[bytes, int]:
            result = obstore.get(store, path, options={"range": {"suffix": tail}})
            return bytes(result.bytes()), int(result.meta["size"])

        head_bytes, (tail_bytes, total) = _gather(
            [lambda: bytes(obstore.get_range(store, path, start=0, end=head)), last],
            self.threads,
        )
        return head_bytes, tail_bytes, total

    def fetch(self, requests: list[tuple[int, int]]) -> list[memoryview]:
        obstore, store, path = self._obstore, self._store, self._path
        wanted = [(start, end) for start, end in requests if end > start]

        def get_ranges(spans: list[tuple[int, int]]) -> Callable[[], list]:
            starts, ends = [s for s, _ in spans], [e for _, e in spans]
            return lambda: obstore.get_ranges(store, path, starts=starts, ends=ends, coalesce=0)

        rounds = [
            get_ranges(wanted[k : k + OBSTORE_PARALLEL])
            for k in range(0, len(wanted), OBSTORE_PARALLEL)
        ]
        answers = iter([memoryview(b) for part in _gather(rounds, self.threads) for b in part])
        return [next(answers) if end > start else memoryview(b"") for start, end in requests]


class _HTTPStatusError(OSError):
    def __init__(self, status: int, reason: str, url: str):
        super().__init__(f"HTTP {status} {reason} for GET {url}")
        self.status = status


class _StdlibClient:
    """Ranged GETs through the standard library (http.client, threads), for a process
    forked from one that used obstore. Handles http(s):// and s3:// (AWS Signature V4 with
    the keys of ``storage_options`` or the AWS_* variables: no instance roles or profile
    files here) and file://; gs:// and az:// need obstore (open the store after the fork,
    or use spawn)."""

    def __init__(self, url: str, storage_options: dict[str, Any], name: str, concurrency: int):
        parts = urlsplit(url)
        self.scheme = parts.scheme.lower()
        self.threads = _Threads(concurrency)  # (each with its connection: self._local)
        config, _ = _split_options(storage_options)
        env = os.environ
        self._keys = None
        if self.scheme == "file":
            self._path = parts.path
            return
        if self.scheme in ("http", "https"):
            self._url = urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))
        elif self.scheme in ("s3", "s3a"):
            region = (
                config.get("region")
                or env.get("AWS_REGION")
                or env.get("AWS_DEFAULT_REGION", "us-east-1")
            )
            endpoint = config.get("endpoint") or env.get("AWS_ENDPOINT_URL")
            key = quote(parts.path.lstrip("/"), safe="/~")
            if endpoint:
                self._url = f"{endpoint.rstrip('/')}/{parts.netloc}/{key}"
            else:
                self._url = f"https://{parts.netloc}.s3.{region}.amazonaws.com/{key}"
            access = config.get("access_key_id") or env.get("AWS_ACCESS_KEY_ID")
            secret = config.get("secret_access_key") or env.get("AWS_SECRET_ACCESS_KEY")
            token = config.get("session_token") or env.get("AWS_SESSION_TOKEN")
            if access and secret:
                self._keys = (access, secret, token, region)
        else:
            raise H5StoreError(
                f"{name}: this process was forked from one that used obstore, which cannot "
                f"be used after a fork; {self.scheme}:// needs it: open the store in the "
                "child, or start workers with spawn (DataLoader(multiprocessing_context="
                "'spawn'))"
            )
        self._local = threading.local()

    def kind(self, exc: BaseException) -> str:
        status = getattr(exc, "status", None)
        if status == 404 or isinstance(exc, FileNotFoundError):
            return "missing"
        if status in (401, 403):
            return "denied"
        return "failed"

    def _get(self, headers: dict[str, str], method: str = "GET") -> tuple[int, dict, bytes]:
        import http.client

        parts = urlsplit(self._url)
        if self._keys is not None:
            headers = _sigv4(method, parts, headers, *self._keys)
        for attempt in range(DEFAULT_RETRIES + 1):
            conn = getattr(self._local, "conn", None)
            try:
                if conn is None:
                    kind = (
                        http.client.HTTPSConnection
                        if parts.scheme == "https"
                        else http.client.HTTPConnection
                    )
                    conn = self._local.conn = kind(parts.netloc, timeout=30)
                path = parts.path + (f"?{parts.query}" if parts.query else "")
                conn.request(method, path, headers=headers)
                response = conn.getresponse()
                body = response.read()
                status = response.status
                if status >= 500 and attempt < DEFAULT_RETRIES:
                    raise ConnectionError(f"HTTP {status}")
                return status, {k.lower(): v for k, v in response.getheaders()}, body
            except (OSError, http.client.HTTPException):
                self._local.conn = None
                if conn is not None:
                    conn.close()
                if attempt == DEFAULT_RETRIES:
                    raise
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    def _range(self, spec: str) -> tuple[bytes, int]:
        if self.scheme == "file":
            with open(self._path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                start, _, end = spec.partition("-")
                if not start:
                    first = max(size - int(end), 0)
                    return os.pread(fh.fileno(), size - first, first), size
                return os.pread(fh.fileno(), int(end) + 1 - int(start), int(start)), size
        status, headers, body = self._get({"Range": f"bytes={spec}"})
        if status not in (200, 206):
            raise _HTTPStatusError(status, body[:200].decode("latin-1"), self._url)
        total = headers.get("content-range", "").rpartition("/")[2]
        return body, int(total) if total.isdigit() else len(body)

    def size(self) -> int:
        return self._range("0-0")[1]

    def head_tail(self, head: int, tail: int) -> tuple[bytes, bytes, int]:
        (head_bytes, _), (tail_bytes, total) = _gather(
            [lambda: self._range(f"0-{head - 1}"), lambda: self._range(f"-{tail}")], self.threads
        )
        return head_bytes, tail_bytes, total

    def fetch(self, requests: list[tuple[int, int]]) -> list[bytes]:
        def one(start: int, end: int) -> Callable[[], bytes]:
            return lambda: self._range(f"{start}-{end - 1}")[0] if end > start else b""

        return _gather([one(start, end) for start, end in requests], self.threads)


def _sigv4(
    method: str,
    parts: SplitResult,
    headers: dict[str, str],
    access: str,
    secret: str,
    token: str | None,
    region: str,
) -> dict[str, str]:
    """``headers`` with AWS Signature Version 4 for an S3 request without a body."""
    import datetime
    import hashlib
    import hmac

    now = datetime.datetime.now(datetime.timezone.utc)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    signed = dict(headers)
    signed.update(
        {
            "host": parts.netloc,
            "x-amz-date": stamp,
            "x-amz-content-sha256": hashlib.sha256(b"").hexdigest(),
        }
    )
    if token:
        signed["x-amz-security-token"] = token
    names = sorted(k.lower() for k in signed)
    lowered = {k.lower(): str(v).strip() for k, v in signed.items()}
    canonical = "\n".join(
        [
            method,
            parts.path or "/",
            parts.query,
            "".join(f"{k}:{lowered[k]}\n" for k in names),
            ";".join(names),
            lowered["x-amz-content-sha256"],
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secret).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    signed["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access}/{scope}, SignedHeaders={';'.join(names)}, "
        f"Signature={signature}"
    )
    return signed


class RemoteSource:
    """The bytes of a store at a URL (see the module docstring). ``storage_options``: obstore
    configuration (``endpoint``, ``access_key_id``, ``secret_access_key``, ``region``,
    ``allow_http``, ...; s3fs's ``key``/``secret``/``endpoint_url`` are understood too), over
    the ``AWS_*`` (``GOOGLE_*``, ``AZURE_*``) environment variables."""

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        *,
        gap: int = DEFAULT_GAP,
        concurrency: int = DEFAULT_CONCURRENCY,
        retries: int = DEFAULT_RETRIES,
    ):
        if not is_url(url):
            raise H5StoreError(f"{url!r} is not a URL h5store reads ({', '.join(SCHEMES)})")
        self.url = url
        self.name = public_url(url)
        self.storage_options = dict(storage_options or {})
        self.gap, self.concurrency = int(gap), int(concurrency)
        self.retries = int(retries)
        self._store, self._path = _make_store(url, storage_options, self.retries)
        self._clients: dict[int, Any] = {}  # per process (see _client)
        #: requests sent and bytes received, and rounds (one per read/read_ranges call)
        self.requests = self.rounds = self.bytes_read = 0
        self._closed = False
        #: the RemoteFile HDF5 reads this source through (set by open_hdf5)
        self.hdf5_file: RemoteFile | None = None

    def __repr__(self) -> str:
        return f"<RemoteSource {self.name}>"

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "storage_options": self.storage_options, "gap": self.gap}

    def __setstate__(self, state: dict[str, Any]) -> None:
        RemoteSource.__init__(self, state["url"], state["storage_options"], gap=state["gap"])

    @property
    def _client(self) -> _StdlibClient | _ObstoreClient:
        """obstore, unless this process was forked from one that used it: obstore's runtime
        (Rust threads) does not survive fork, and every request of a forked child would wait
        forever. A DataLoader's forked workers read through the standard library instead."""
        pid = os.getpid()
        if self._clients.get(pid) is None:
            if _OBSTORE_USERS and pid not in _OBSTORE_USERS:
                self._clients[pid] = _StdlibClient(
                    self.url, self.storage_options, self.name, self.concurrency
                )
            else:
                _OBSTORE_USERS.add(pid)
                self._clients[pid] = _ObstoreClient(self._store, self._path, self.concurrency)
        return self._clients[pid]

    def error(self, exc: BaseException, what: str = "") -> H5StoreError:
        """The h5store error for a failed request (``what``: e.g. the ids being read)."""
        if isinstance(exc, H5StoreError):
            return exc
        reason = _scrub(str(exc), self.storage_options)
        where = f"{self.name}{': ' + what if what else ''}"
        kind = self._client.kind(exc)
        if kind == "missing":
            return StoreNotFoundError(f"{self.name} does not exist ({reason})")
        if kind == "denied":
            return RemoteReadError(
                f"{where}: access denied; check the credentials (AWS_ACCESS_KEY_ID / "
                f"AWS_SECRET_ACCESS_KEY or storage_options) and the endpoint ({reason})",
                self.name,
            )
        return RemoteReadError(
            f"{where}: the read failed after {self.retries} retries ({reason})", self.name
        )

    # ------------------------------------------------------------------ ByteSource

    def size(self) -> int:
        """The size of the snapshot HDF5 reads (see RemoteFile); before an open, the
        object's size now (one HEAD request)."""
        self._check_open()
        if self.hdf5_file is not None:
            return self.hdf5_file.size
        try:
            size = self._client.size()
        except Exception as exc:
            raise self.error(exc) from None
        self.requests += 1
        self.rounds += 1
        return size

    def read(self, offset: int, size: int) -> Buffer:
        # HDF5 metadata h5store reads directly (heap collections) may be cached already
        if self.hdf5_file is not None:
            hit = self.hdf5_file.cached(offset, size)
            if hit is not None:
                return hit
        return self.read_ranges([offset], [size])[0]

    def prefetch_rows(self, dataset: h5py.Dataset, lo: int, hi: int) -> None:
        """See :meth:`RemoteFile.prefetch_rows`."""
        if self.hdf5_file is not None:
            self.hdf5_file.prefetch_rows(dataset, lo, hi)

    def prefetch_heaps(self, addresses: Sequence[int]) -> None:
        """Fetch the global heap collections at ``addresses`` (the sources' strings) in one
        round: a collection is 4 to 64 kB."""
        self.prefetch(addresses, [64 << 10] * len(addresses))

    def prefetch(self, offsets: Sequence[int], sizes: Sequence[int]) -> None:
        """See :meth:`RemoteFile.prefetch`."""
        if self.hdf5_file is not None:
            self.hdf5_file.prefetch(offsets, sizes)

    def read_head_tail(self, head: int, tail: int) -> tuple[bytes, bytes, int]:
        """The first ``head`` and the last ``tail`` bytes (fewer of each where the object is
        smaller) and the object's size, in one round of two requests (the tail as a suffix
        range, so no HEAD request first)."""
        self._check_open()
        try:
            head_bytes, tail_bytes, total = self._client.head_tail(head, tail)
        except Exception as exc:
            raise self.error(exc) from None
        self.requests += 2
        self.rounds += 1
        self.bytes_read += len(head_bytes) + len(tail_bytes)
        return head_bytes, tail_bytes, total

    def read_ranges(
        self, offsets: Sequence[int], sizes: Sequence[int], *, what: str = ""
    ) -> list[Buffer]:
        """Many ranges in one round: merged where closer than ``gap``, the rest concurrent.
        FormatError where a range lies past the object's end; RemoteReadError (naming the URL
        and ``what``) where the server fails after the retries."""
        self._check_open()
        offsets = [int(o) for o in offsets]
        sizes = [int(n) for n in sizes]
        if not offsets:
            return []
        if min(offsets) < 0 or min(sizes) < 0:
            raise FormatError(f"{self.name}: a read at a negative offset or size")
        requests, where = merge_ranges(offsets, sizes, self.gap)
        try:
            blobs = self._client.fetch(requests)
        except Exception as exc:
            raise self.error(exc, what) from None
        self.rounds += 1
        self.requests += sum(1 for s, e in requests if e > s)
        self.bytes_read += sum(len(b) for b in blobs)
        out: list[Buffer] = []  # (slices of the fetched blobs: memoryviews from obstore)
        for (request, start, size), offset in zip(where, offsets):
            piece = blobs[request][start : start + size]
            if len(piece) != size:
                raise FormatError(
                    f"{self.name}: bytes {offset}-{offset + size} lie past the end of the object"
                    f"{' (' + what + ')' if what else ''}; it was cut short or is being replaced"
                )
            out.append(piece)
        return out

    def fresh(self, dataset: h5py.Dataset | None = None) -> None:
        """See :meth:`RemoteFile.fresh` (of the file object HDF5 reads this source through)."""
        if self.hdf5_file is not None:
            self.hdf5_file.fresh(dataset)

    def close(self) -> None:
        self._closed = True
        self.hdf5_file = None
        # Only this process's client: a forked child's copy of its parent's pool has no
        # threads, and its locks may have been copied held.
        client = self._clients.get(os.getpid())
        if client is not None:
            client.threads.close()

    def _check_open(self) -> None:
        if self._closed:
            from .errors import ClosedStoreError

            raise ClosedStoreError(f"{self.name} is closed")


# --------------------------------------------------------------------------- HDF5 over ranges

#: Bytes read from the file's start and from its end in the first round of an open, before
#: HDF5 reads anything: h5store's layout puts the superblock, the root group and the class
#: groups' headers at the start (49 kB for 10 classes) and a closed file's last metadata
#: (the object headers and chunk indexes written at close) within its last few hundred kB.
HEAD_BYTES = 256 << 10
TAIL_BYTES = 1 << 20
#: Blocks one chunk-index prefetch fetches at most (a hostile file cannot make it read more).
_PREFETCH_MAX_BLOCKS = 64
_ARRAY_BLOCKS = (b"EAHD", b"EAIB", b"EASB")
_UNDEF = (1 << 64) - 1
#: How much longer than the object HDF5 is told a file a writer has open is (see RemoteFile).
LIVE_MARGIN = 64 << 20
#: What a cache miss fetches (aligned): HDF5's metadata reads are 23 B to 12 kB.
BLOCK_BYTES = 64 << 10


class RemoteFile(io.RawIOBase):
    """A read-only file object over a :class:`RemoteSource` for h5py (``driver='fileobj'``):
    a cache of blocks, filled first with the head and tail of the object (one round, two
    requests), then a block per miss. Its size is the object's size at that first round: the
    snapshot every later read stays within (a writer appending meanwhile changes nothing it
    sees). A superblock still marked open by a writer is presented to HDF5 as closed at the
    snapshot's size, so that HDF5 opens the snapshot (see open_hdf5)."""

    def __init__(self, source: RemoteSource, head: int = HEAD_BYTES, tail: int = TAIL_BYTES):
        self.source = source
        self._blocks: dict[int, bytes] = {}
        self._pos = 0
        head_bytes, tail_bytes, self.size = source.read_head_tail(head, tail)
        #: (data block, super block) addresses in the index block of the extensible array
        #: whose header HDF5 read last (see _prefetch_array_blocks)
        self._array_shape: tuple[int, int] | None = None
        #: the writer flags the superblock had (0: closed cleanly)
        self.writer_flags = 0
        #: the size HDF5 is told (more than the object's while a writer appends: see below)
        self.extent = self.size
        head_bytes = self._patch_superblock(head_bytes)
        self._fill(0, head_bytes)
        self._fill(self.size - len(tail_bytes), tail_bytes)

    def _fill(self, start: int, data: Buffer) -> None:
        """Cache the whole blocks of ``data`` (which lies at ``start``), and the last,
        partial block of the file."""
        b = BLOCK_BYTES
        first = -(-start // b)
        for k in range(first, (start + len(data)) // b + 1):
            lo, hi = k * b - start, min((k + 1) * b, self.size) - start
            if lo >= 0 and hi <= len(data) and hi > lo and k not in self._blocks:
                self._blocks[k] = bytes(data[lo:hi])

    def _patch_superblock(self, head: bytes) -> bytes:
        block = bytearray(head[:SUPERBLOCK_BYTES])
        if len(block) < SUPERBLOCK_BYTES or block[:8] != _SIGNATURE or block[8] not in (2, 3):
            return head
        if block[9] != 8 or struct.unpack_from("<I", block, 44)[0] != lookup3(bytes(block[:44])):
            raise FormatError(
                f"{self.source.name} is damaged: its HDF5 superblock fails its checksum"
            )
        base, _ext, eoa = struct.unpack_from("<QQQ", block, 12)
        self.writer_flags = block[11]
        if not block[11] and eoa <= self.size:
            return head
        if not block[11]:
            raise FormatError(
                f"{self.source.name} is truncated: {self.size} bytes, shorter than HDF5 "
                f"recorded ({eoa}); the upload or copy was cut short: copy the file again"
            )
        # A writer has it open: HDF5 refuses such a file without SWMR (which needs a local
        # file). The snapshot is opened as a closed file of the size seen; what the writer
        # had not committed by then is left out by the committed-rows rules, and metadata
        # torn by a write in flight fails its checksum and makes open_hdf5 try again.
        # HDF5 is told the file is LIVE_MARGIN longer: reads after a barrier see metadata the
        # writer wrote since, which can point past the size first seen.
        block[11] = 0
        self.extent = self.size + LIVE_MARGIN
        struct.pack_into("<Q", block, 28, self.extent if base == 0 else eoa)
        struct.pack_into("<I", block, 44, lookup3(bytes(block[:44])))
        return bytes(block) + head[SUPERBLOCK_BYTES:]

    def fresh(self, dataset: h5py.Dataset | None = None) -> None:
        """Forget every cached block (for a file a writer has open), so that what HDF5 reads
        next is fetched after what it read so far; with ``dataset`` (an h5py dataset), fetch
        all its chunks again in one request. A reader racing a writer reads /index_tail,
        then /index, then the catalogue, each fresh after the one before (the order
        ReadEngine._load keeps locally): a block cached earlier could show /index
        older than the tail. And the tail, which the writer rewrites in place, is read in one
        request: read in pieces, its first rows could predate a move to /index and its last
        follow it, which would leave rows out."""
        if not self.writer_flags:
            return
        self._blocks.clear()
        if dataset is None:
            return
        spans: list[tuple[int, int]] = []
        dataset.id.chunk_iter(lambda c: spans.append((c.byte_offset, c.byte_offset + c.size)))
        if not spans:
            return
        b = BLOCK_BYTES
        first = min(s for s, _ in spans) // b
        last = min(-(-max(e for _, e in spans) // b) * b, self.size)
        if last <= first * b:
            return
        (data,) = self.source.read_ranges([first * b], [last - first * b])
        self._blocks.clear()  # (the chunk index just read may share blocks with the chunks)
        self._fill(first * b, data)

    def prefetch(self, offsets: Sequence[int], sizes: Sequence[int]) -> None:
        """Cache the blocks holding these ranges (those within the snapshot), fetching the
        missing ones in one round: what HDF5 is about to read piece by piece."""
        b = BLOCK_BYTES
        wanted = sorted(
            {
                k
                for o, n in zip(offsets, sizes)
                if 0 <= o and o + n <= self.size
                for k in range(o // b, (o + max(n, 1) - 1) // b + 1)
            }
            - self._blocks.keys()
        )
        if wanted:
            got = self.source.read_ranges(
                [k * b for k in wanted], [min(b, self.size - k * b) for k in wanted]
            )
            for k, data in zip(wanted, got):
                self._blocks[k] = bytes(data)

    def prefetch_rows(self, dataset: h5py.Dataset, lo: int, hi: int) -> None:
        """Cache the chunks of ``dataset`` (chunked along its first axis) that hold rows
        ``lo`` to ``hi``, in one round."""
        if dataset.chunks is None or hi <= lo:
            return
        step = dataset.chunks[0]
        spans: list[tuple[int, int]] = []

        def take(chunk: Any) -> None:  # (h5py's StoreInfo of one chunk)
            first = chunk.chunk_offset[0]
            if first < hi and first + step > lo and chunk.byte_offset is not None:
                spans.append((chunk.byte_offset, chunk.size))

        dataset.id.chunk_iter(take)
        self.prefetch([o for o, _ in spans], [n for _, n in spans])

    def cached(self, offset: int, size: int) -> bytes | None:
        """Bytes ``[offset, offset + size)`` if every block of them is cached, else None."""
        b = BLOCK_BYTES
        if offset < 0 or size <= 0 or offset + size > self.size:
            return None
        keys = range(offset // b, (offset + size - 1) // b + 1)
        if any(k not in self._blocks for k in keys):
            return None
        joined = b"".join(self._blocks[k] for k in keys)
        start = offset - keys[0] * b
        return joined[start : start + size]

    # -------------------------------------------------------------- io.RawIOBase

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.extent}[whence]
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:  # (any writable buffer)
        view = memoryview(buffer).cast("B")
        start = self._pos
        end = min(start + len(view), self.extent)
        if end <= start:
            return 0
        if end > self.size:  # past the first size seen: what a live writer added, uncached
            data = self.source.read(start, end - start)
            view[: len(data)] = data
            self._pos = start + len(data)
            return len(data)
        b = BLOCK_BYTES
        wanted = range(start // b, (end - 1) // b + 1)
        missing = [k for k in wanted if k not in self._blocks]
        if missing:
            got = self.source.read_ranges(
                [k * b for k in missing], [min(b, self.size - k * b) for k in missing]
            )
            for k, fetched in zip(missing, got):
                self._blocks[k] = bytes(fetched)
        at = 0
        for k in wanted:
            data = self._blocks[k]
            lo = max(start - k * b, 0)
            hi = min(end - k * b, len(data))
            view[at : at + hi - lo] = data[lo:hi]
            at += hi - lo
        self._pos = start + at
        if view[:4] in _ARRAY_BLOCKS:
            self._prefetch_array_blocks(bytes(view[:at]))
        return at

    # -------------------------------------------------------------- chunk index prefetch

    def _prefetch_array_blocks(self, block: bytes) -> None:
        """Where HDF5 just read an extensible array's header, index block or super block (the
        chunk index of /index and the other growing datasets), fetch every block it points
        to in one round, before HDF5 asks for them one at a time: walking the chunk index of
        a 100,000-row /index took seven round trips, one per block. A prefetch only fills
        the cache: a misread layout costs bytes, never a wrong answer."""
        kind = block[:4]
        if kind == b"EAHD" and len(block) >= 12:
            # element size, max elements bits, index block elements, data block min
            # elements, super block min data pointers (H5EA__hdr_init's parameters)
            _, bits, _, dblk_min, sblk_min = block[6:11]
            if dblk_min and sblk_min and bits:
                nsblks = 1 + bits - (dblk_min.bit_length() - 1)
                self._array_shape = (
                    2 * (sblk_min - 1),  # data block addresses in the index block
                    max(nsblks - 2 * (sblk_min.bit_length() - 1), 0),  # super block addresses
                )
            return
        if kind == b"EAIB" and self._array_shape is not None:
            count = sum(self._array_shape)
        elif kind == b"EASB":
            count = self._array_shape[1] if self._array_shape is not None else 0
            count = max(count, 64)  # (a super block's data blocks: at most this many here)
        else:
            return
        end = len(block) - 4  # the checksum follows the addresses
        words = [
            int.from_bytes(block[at : at + 8], "little")
            for at in range(end - 8, max(end - 8 * count, 13) - 1, -8)
        ]
        if kind == b"EASB":  # the data block addresses run back from the checksum
            stop = next((k for k, w in enumerate(words) if w >= self.size and w != _UNDEF), None)
            words = words[:stop]
        b = BLOCK_BYTES
        wanted = sorted(
            {k for w in words if 0 < w < self.size for k in (w // b, (w + 4096) // b)}
            - self._blocks.keys()
        )[:_PREFETCH_MAX_BLOCKS]
        wanted = [k for k in wanted if k * b < self.size]
        if wanted:
            got = self.source.read_ranges(
                [k * b for k in wanted], [min(b, self.size - k * b) for k in wanted]
            )
            for k, data in zip(wanted, got):
                self._blocks[k] = bytes(data)

    def write(self, _data: Any) -> int:
        raise io.UnsupportedOperation("a store opened by URL is read-only")


#: h5py files open over a RemoteFile in this process: closed at exit, before the interpreter
#: goes (see _close_at_exit).
_OPEN_FILES: weakref.WeakSet = weakref.WeakSet()


def _close_at_exit() -> None:
    """HDF5 closes the files still open when its library shuts down, after Python's own
    shutdown: h5py's file-object driver then calls into an interpreter that is gone, and
    the process dies of a segmentation fault (a DataLoader worker, whose dataset never closes
    its store, did at every exit). Python's exit handlers run before that: close them here."""
    for f in list(_OPEN_FILES):
        with contextlib.suppress(Exception):
            f.close()


atexit.register(_close_at_exit)


def open_hdf5(source: RemoteSource) -> tuple[h5py.File, RemoteFile]:
    """The store file at ``source`` opened by h5py over a :class:`RemoteFile`, HDF5 told to
    follow nothing out of it (see _containment), and the containment walk done. A file a
    writer has open is opened at the snapshot the first round saw; metadata the writer was
    rewriting at that instant fails HDF5's checksums, and the open is tried again from a new
    snapshot for up to READER_RETRY_SECONDS."""
    from . import format as fmt
    from ._containment import ContainedFile, check_contained
    from ._file import _RDCC_NBYTES, READER_RETRY_SECONDS

    deadline = time.monotonic() + READER_RETRY_SECONDS
    delay = 0.05
    while True:
        fileobj = RemoteFile(source)
        if fileobj.writer_flags and not fileobj.writer_flags & SWMR_WRITE_FLAG:
            # a writer restructuring the file (SWMR off) or one that died: wait, then say so
            error: H5StoreError = RecoveryNeededError(
                f"{source.name} is marked open by a writer outside SWMR mode: one is "
                "restructuring it, or one died; recover it where it was written (open it "
                "once with mode 'a') and copy it again"
            )
        else:
            try:
                f = ContainedFile(fileobj, "r", libver=fmt.LIBVER, rdcc_nbytes=_RDCC_NBYTES)
            except (OSError, RuntimeError, ValueError) as exc:
                error = FormatError(f"{source.name} cannot be opened as HDF5: {exc}")
                if "signature" in str(exc):
                    error = NotAStoreError(f"{source.name} is not an HDF5 file")
            else:
                _OPEN_FILES.add(f)
                try:
                    check_contained(f, source.name, previews=False)
                    if not fileobj.writer_flags:
                        source.hdf5_file = fileobj
                        return f, fileobj
                    # The walk loaded /index's header into HDF5's cache, from before the
                    # tail is read: open again, as open_for_reading does for SWMR.
                    f.close()
                    fileobj = RemoteFile(source)
                    f = ContainedFile(fileobj, "r", libver=fmt.LIBVER, rdcc_nbytes=_RDCC_NBYTES)
                    source.hdf5_file = fileobj
                    return f, fileobj
                except BaseException as exc:
                    f.close()
                    if not isinstance(exc, (FormatError, OSError, RuntimeError)):
                        raise
                    error = exc if isinstance(exc, FormatError) else FormatError(str(exc))
        if not fileobj.writer_flags or time.monotonic() > deadline:
            raise error
        time.sleep(delay)
        delay = min(2 * delay, 0.5)


def open_remote(
    url: str,
    storage_options: dict[str, Any] | None,
    load: Callable[[RemoteSource, h5py.File], T],
) -> tuple[RemoteSource, h5py.File, T]:
    """Open the store at ``url`` for reading: ``load(source, f)`` (which reads the index and
    catalogue and returns what the caller keeps) over a new RemoteSource and the HDF5 file
    :func:`open_hdf5` opened. A snapshot of a file a writer has open that does not read
    consistently (rows committed after the snapshot's metadata, a chunk index past its
    end) is a race, not damage: it is read again from a new snapshot for up to
    READER_RETRY_SECONDS, as a local reader retries a live writer. Returns (source, f,
    what load returned); closes everything on failure."""
    from ._file import READER_RETRY_SECONDS

    source = RemoteSource(url, storage_options)
    deadline = time.monotonic() + READER_RETRY_SECONDS
    delay = 0.05
    while True:
        try:
            f, fileobj = open_hdf5(source)
        except BaseException:
            source.close()
            raise
        try:
            return source, f, load(source, f)
        except FormatError:
            f.close()
            if not fileobj.writer_flags or time.monotonic() > deadline:
                source.close()
                raise
        except BaseException:
            f.close()
            source.close()
            raise
        time.sleep(delay)
        delay = min(2 * delay, 0.5)


def check_remote(path: object, mode: object, storage_options: object) -> None:
    """Refuse what a URL cannot do before anything is opened: modes that write (a store is
    written locally and copied), and ``storage_options`` that are not a dict of options."""
    if storage_options is not None and not isinstance(storage_options, dict):
        raise InvalidInputError(
            f"storage_options must be a dict, got {type(storage_options).__name__}"
        )
    if is_url(path) and mode != "r":
        raise H5StoreError(
            f"{public_url(path)}: a store opened by URL is read-only (mode 'r'), not "
            f"{mode!r}: write it locally and copy it there (aws s3 cp, rclone, gsutil, scp)"
        )
