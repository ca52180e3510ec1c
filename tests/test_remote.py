"""Stores read by URL, against real servers: SeaweedFS's S3 gateway and nginx (HTTP ranges).

The servers come from the session fixtures of tests/remote_servers.py (``s3_server``,
``http_server``; .ci/run starts the same programs); nothing here is mocked. A dying server is
a real server behind a TCP relay that the test cuts.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import h5store
from h5store import format as fmt
from h5store._file import read_committed_index
from h5store._remote import (
    RETRY_SECONDS,
    RemoteSource,
    is_url,
    merge_ranges,
    open_hdf5,
    public_url,
)
from h5store.errors import FormatError, RemoteReadError, StoreNotFoundError

N_IMAGES = 600


def make_store(path, n=N_IMAGES, batch=100, seed=0):
    """A store of ``n`` small JPEGs in batches of ``batch``, with score vectors and sources."""
    import imagecodecs

    rng = np.random.default_rng(seed)
    tiles = [
        imagecodecs.jpeg_encode(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), level=90)
        for _ in range(7)
    ]
    with h5store.open(path, "w", labels=["cat", "dog", "eel"]) as store:
        for start in range(0, n, batch):
            m = min(batch, n - start)
            scores = rng.random((m, 3)).astype(np.float32)
            store.add_encoded_batch(
                [tiles[(start + k) % 7] for k in range(m)],
                labels=scores.argmax(1).tolist(),
                scores=scores,
                sources=[f"/img/{start + k}.jpg" for k in range(m)],
            )
    return path


@pytest.fixture(scope="module")
def local_store(tmp_path_factory):
    return str(make_store(tmp_path_factory.mktemp("remote") / "run.h5"))


@pytest.fixture(scope="module")
def s3_url(s3_server, local_store):
    return s3_server.upload(local_store, "run.h5")


@pytest.fixture(scope="module")
def http_url(http_server, local_store):
    return http_server.upload(local_store, "run.h5")


def open_index(source):
    """What a reader's open reads, over a RemoteSource: the checked committed rows."""
    f, fileobj = open_hdf5(source)
    try:
        fmt.check_root(f, source.name)
        fits = fmt.RowsFit(fmt.read_stacks(f), len(fmt.read_labels(f)))
        index, _ = read_committed_index(f, source, fits, lambda ds: fileobj.fresh(ds))
        fmt.check_committed_rows(f, len(index), source.name)
        return index
    finally:
        f.close()


# --------------------------------------------------------------------------- ranges


@given(
    st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 300)), min_size=1, max_size=40),
    st.integers(0, 400),
)
def test_merged_requests_cover_every_range_and_respect_the_gap(ranges, gap):
    offsets, sizes = [o for o, _ in ranges], [n for _, n in ranges]
    requests, where = merge_ranges(offsets, sizes, gap)
    data = bytes(range(256)) * 40
    fetched = [data[s:e] for s, e in requests]
    for (req, start, size), offset in zip(where, offsets):
        assert fetched[req][start : start + size] == data[offset : offset + size]
    # requests are disjoint, in order, and further apart than the gap
    for (_, end), (start, _) in zip(requests, requests[1:]):
        assert start - end > gap


def test_is_url_and_public_url():
    assert is_url("s3://b/k.h5") and is_url("https://h/x.h5") and is_url("file:///tmp/x.h5")
    assert not is_url("run.h5") and not is_url("/tmp/s3://x") and not is_url(b"s3://b/k")
    assert public_url("https://u:pw@host:81/a/b.h5?X-Amz-Signature=abc") == "https://host:81/a/b.h5"


def test_source_reads_the_bytes_of_the_object(s3_url, http_url, local_store):
    data = Path(local_store).read_bytes()
    rng = np.random.default_rng(3)
    offsets = rng.integers(0, len(data) - 500, 64).tolist()
    sizes = rng.integers(0, 500, 64).tolist()
    for url in (s3_url, http_url, "file://" + local_store):
        source = RemoteSource(url, gap=1000)
        got = source.read_ranges(offsets, sizes)
        assert [bytes(g) for g in got] == [data[o : o + n] for o, n in zip(offsets, sizes)]
        assert source.rounds == 1 and source.requests < 64  # neighbours merged
        assert source.size() == len(data)
        with pytest.raises(FormatError, match="past the end"):
            source.read(len(data) - 4, 8)


def test_missing_object_and_wrong_credentials_name_the_url_not_the_secret(s3_server, s3_url):
    with pytest.raises(StoreNotFoundError, match="nothing-here.h5"):
        RemoteSource(s3_url.replace("run.h5", "nothing-here.h5")).read(0, 8)
    wrong = "not-the-secret-0123456789"
    source = RemoteSource(s3_url, {"secret_access_key": wrong})
    with pytest.raises(RemoteReadError) as caught:
        source.read(0, 8)
    message = str(caught.value)
    assert s3_url in message and "access denied" in message
    assert wrong not in message and os.environ["AWS_SECRET_ACCESS_KEY"] not in message
    assert caught.value.url == s3_url


# --------------------------------------------------------------------------- the open


def test_open_reads_head_and_tail_then_the_index_in_one_round(s3_url, local_store):
    source = RemoteSource(s3_url)
    index = open_index(source)
    with h5store.open(local_store) as local:
        assert index.column("id").tolist() == local.ids().tolist()
        with __import__("h5py").File(local_store, "r", locking=False) as f:
            index_bytes = f[fmt.INDEX].id.get_storage_size()
    assert source.bytes_read <= index_bytes + (2 << 20)
    # first round: head and tail, two requests; the /index chunks: one round
    assert source.requests <= 4 + source.rounds * 2


def test_truncated_object_is_refused_clearly(s3_server, local_store, tmp_path):
    data = Path(local_store).read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    url = s3_server.upload(str(cut), "cut.h5")
    with pytest.raises(FormatError, match="truncated"):
        open_index(RemoteSource(url))


WRITER = """
import sys, time, numpy as np, imagecodecs, h5store
rng = np.random.default_rng(0)
tile = imagecodecs.jpeg_encode(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), level=90)
with h5store.open(sys.argv[1], "w", labels=["a", "b"]) as store:
    store.add_encoded_batch([tile] * 100, labels=[0] * 100)
    store.commit()
    print("ready", flush=True)
    deadline = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < deadline:
        store.add_encoded_batch([tile] * 100, labels=[1] * 100)
        store.commit()
"""


def test_store_being_appended_to_opens_at_a_commit(http_server):
    """nginx serves the file a writer is appending to (batches of 100, each committed): every
    open sees a whole number of batches, never fewer than an earlier open."""
    path = os.path.join(http_server.root, "growing.h5")
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, path, "6"], stdout=subprocess.PIPE, text=True
    ) as writer:
        assert writer.stdout.readline().strip() == "ready"
        source = RemoteSource(http_server.url("growing.h5"))
        counts = []
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            index = open_index(source)
            ids = index.column("id")
            assert ids.tolist() == list(range(len(ids)))  # a prefix: no row left out
            counts.append(len(ids))
            # and through h5store.open, whose reads check every payload's CRC-32
            with h5store.open(http_server.url("growing.h5")) as store:
                ids = store.ids()
                assert ids.tolist() == list(range(len(ids))) and len(ids) % 100 == 0
                store.get_batch(ids[-100:])
                seen = len(ids)
                store.refresh()  # what the writer committed since
                assert len(store) >= seen and len(store) % 100 == 0
        assert len(counts) >= 3 and all(c % 100 == 0 for c in counts)
        assert counts == sorted(counts) and counts[-1] > counts[0]


# --------------------------------------------------------------------------- a dying server


class Relay:
    """A TCP relay to a real server that, once ``budget`` bytes of answers have passed, cuts
    every connection and refuses new ones: the server stopping in the middle of a batch."""

    def __init__(self, port: int, budget: int):
        self.target, self.budget = port, budget
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.dead = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:  # a connection accepted as kill() ran would have outlived it
                if self.dead.is_set():
                    client.close()
                    server.close()
                    return
                self.sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src, dst, counted):
        try:
            while data := src.recv(65536):
                if counted:
                    self.budget -= len(data)
                    if self.budget < 0:
                        self.kill()
                        return
                dst.sendall(data)
        except OSError:
            pass

    def kill(self):
        with self.lock:
            self.dead.set()
            sockets = [self.listener, *self.sockets]
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_server_stopping_mid_batch_gives_a_clear_error_after_bounded_retries(http_server, http_url):
    relay = Relay(http_server.port, budget=100_000)
    url = http_url.replace(f":{http_server.port}/", f":{relay.port}/")
    source = RemoteSource(url, gap=0, concurrency=4)
    size = RemoteSource(http_url).size()
    offsets = list(range(0, size - 4096, size // 200))
    start = time.monotonic()
    with pytest.raises(RemoteReadError) as caught:
        source.read_ranges(offsets, [4096] * len(offsets), what="ids 1-200")
    assert time.monotonic() - start < RETRY_SECONDS + 10
    assert url in str(caught.value) and "ids 1-200" in str(caught.value)


LITTERED_OPENS = """
import gc, sys, threading, time, h5py, h5store
from h5store import _remote
if sys.argv[2] == "stdlib":  # as in a process forked from one that used obstore
    _remote._OBSTORE_USERS.add(-1)
junk = h5py.File(sys.argv[1], "r", locking=False)
done = threading.Event()

def litter():  # h5py objects in reference cycles, for whichever thread collects next
    while not done.is_set():
        cycle = [junk["/index"]]
        cycle.append(cycle)
        del cycle
        time.sleep(0.0002)

# (joined before exit: a daemon thread frozen at shutdown while holding h5py's lock hangs
# the interpreter's last collection, a hang of the test's own making)
thread = threading.Thread(target=litter)
thread.start()
gc.set_threshold(50, 2, 2)
try:
    for _ in range(20):
        with h5store.open("file://" + sys.argv[1]) as store:
            store.get_batch(store.ids()[::97])
            client = type(store._engine.source._client).__name__
finally:
    done.set()
    thread.join()
print("opened through", client)
"""


@pytest.mark.parametrize("client", ["obstore", "stdlib"])
def test_reads_inside_hdf5_survive_other_threads_collecting_h5py_objects(tmp_path, client):
    """A cyclic collection on any thread may finalize h5py objects, which takes h5py's lock;
    a thread inside HDF5 (holding it) that waited on another thread for its bytes hung
    (two CI runs: 120 s, then RemoteReadError). A store of 50 classes in 8 commits puts
    HDF5 metadata outside the first round's head and tail, so every open reads inside HDF5;
    before the fix each run hung in its first open."""
    path = str(tmp_path / "classes.h5")
    rng = np.random.default_rng(0)
    with h5store.open(path, "w", labels=[f"c{k}" for k in range(50)]) as store:
        for _ in range(8):
            images = rng.integers(0, 255, (400, 32, 32, 3), dtype=np.uint8)
            store.add_batch(images, labels=rng.integers(0, 50, 400))
            store.commit()
    done = subprocess.run(
        [sys.executable, "-c", LITTERED_OPENS, path, client],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    used = {"obstore": "_ObstoreClient", "stdlib": "_StdlibClient"}[client]
    assert done.stdout.split() == ["opened", "through", used]


@pytest.mark.parametrize("client", ["obstore", "stdlib"])
def test_a_thread_holding_h5pys_lock_sends_every_request_itself(local_store, monkeypatch, client):
    """The rule the test above checks by its effect, checked directly: a round of 40 ranges
    (4 obstore calls, 40 standard-library requests) is sent from the client's threads,
    except where the calling thread holds h5py's lock, where all of it is sent from there."""
    import obstore
    from h5py._objects import phil

    from h5store import _remote

    senders: list[int] = []
    if client == "stdlib":  # as in a process forked from one that used obstore
        monkeypatch.setattr(_remote, "_OBSTORE_USERS", {-1})
        real_range = _remote._StdlibClient._range

        def sent(self, spec):
            senders.append(threading.get_ident())
            return real_range(self, spec)

        monkeypatch.setattr(_remote._StdlibClient, "_range", sent)
    else:
        real_get_ranges = obstore.get_ranges

        def sent(*args, **kwargs):
            senders.append(threading.get_ident())
            return real_get_ranges(*args, **kwargs)

        monkeypatch.setattr(obstore, "get_ranges", sent)
    source = RemoteSource("file://" + local_store, gap=0)
    offsets = list(range(0, 40 * 5000, 5000))
    data = Path(local_store).read_bytes()
    expected = [data[o : o + 100] for o in offsets]
    with phil:
        assert [bytes(b) for b in source.read_ranges(offsets, [100] * 40)] == expected
    assert set(senders) == {threading.get_ident()}
    senders.clear()
    assert [bytes(b) for b in source.read_ranges(offsets, [100] * 40)] == expected
    assert senders and threading.get_ident() not in senders


@pytest.mark.parametrize("client", ["obstore", "stdlib"])
def test_a_closed_source_lets_its_threads_end(local_store, monkeypatch, client):
    """The threads a source's rounds started end when it is closed, not when the garbage
    collector finds it: a reader by URL makes a new source at every refresh, and a closed
    store the caller still holds kept them (and a standard-library client's connections)."""
    from h5store import _remote

    if client == "stdlib":  # as in a process forked from one that used obstore
        monkeypatch.setattr(_remote, "_OBSTORE_USERS", {-1})

    def remote_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("h5store-remote")}

    before = remote_threads()
    source = RemoteSource("file://" + local_store, gap=0)
    source.read_ranges(list(range(0, 40 * 5000, 5000)), [100] * 40)
    started = remote_threads() - before
    assert started  # (40 ranges: more than one call, so the client's threads sent them)
    source.close()
    for thread in started:
        thread.join(10)
    assert not any(thread.is_alive() for thread in started)
    assert source._clients  # (the source is still referenced: only close ended them)


# --------------------------------------------------------------------------- h5store.open(url)


def same_frames(a, b):
    import pandas as pd

    pd.testing.assert_frame_equal(a, b)


def test_every_read_call_on_a_url_answers_as_on_the_path(s3_url, http_url, local_store):
    with h5store.open(local_store) as local:
        ids = local.ids()
        chosen = ids[::-37][:12].tolist()
        for url in (s3_url, http_url):
            with h5store.open(url) as store:
                assert (
                    not store.writable and len(store) == len(local) and store.labels == local.labels
                )
                assert store.ids().tolist() == ids.tolist() and chosen[0] in store
                np.testing.assert_array_equal(store[chosen[0]], local[chosen[0]])
                assert store.get_encoded(chosen[1]) == local.get_encoded(chosen[1])
                for got, want in zip(store.get_batch(chosen), local.get_batch(chosen)):
                    np.testing.assert_array_equal(got, want)
                out = np.zeros((len(chosen), 16, 16, 3), np.uint8)
                np.testing.assert_array_equal(
                    store.get_batch(chosen, out=out),
                    local.get_batch(chosen, out=np.zeros_like(out)),
                )
                assert repr(store.record(chosen[2])) == repr(local.record(chosen[2]))
                assert (
                    store.query(min_score=0.5, label="dog").tolist()
                    == local.query(min_score=0.5, label="dog").tolist()
                )
                same_frames(store.to_pandas(scores=True), local.to_pandas(scores=True))
                np.testing.assert_array_equal(store.scores, local.scores)
                assert store.sources == local.sources
                report = store.verify()
                assert report.ok and report.checked == len(local)
                assert store.stats()["images"] == len(local)


def test_a_batch_is_one_round_of_requests(s3_url, local_store):
    with h5store.open(s3_url) as store:
        source = store._engine.source
        before = source.rounds
        store.get_batch(store.ids()[::5][:64])
        assert source.rounds == before + 1


def test_modes_that_write_are_refused_on_a_url(s3_url):
    for mode in ("w", "a", "r+", "x"):
        with pytest.raises(h5store.H5StoreError, match="write it locally"):
            h5store.open(s3_url, mode)


def test_damaged_payload_on_the_server_is_damaged_image_error(s3_server, local_store, tmp_path):
    with h5store.open(local_store) as local:
        victim = int(local.ids()[5])
        row = local._engine.index.find(victim)
        offset = int(local._engine.index.offsets[row])
    data = bytearray(Path(local_store).read_bytes())
    data[offset + 20] ^= 0xFF
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(bytes(data))
    url = s3_server.upload(damaged, "damaged.h5")
    with h5store.open(url) as store:
        with pytest.raises(h5store.DamagedImageError) as caught:
            store[victim]
        assert caught.value.image_id == victim and url in str(caught.value)
        with pytest.raises(h5store.DamagedImageError):
            store.get_batch([victim - 1, victim])
        assert store.verify().damaged == [victim]


def test_sharded_view_over_urls(s3_server, tmp_path):
    from shards_util import write_shards

    paths = write_shards(tmp_path)
    urls = [s3_server.upload(p, f"shards/{os.path.basename(p)}") for p in paths]
    with h5store.open(urls) as view, h5store.open(paths) as local:
        assert view.ids().tolist() == local.ids().tolist()
        ids = view.ids()[::-1]
        for got, want in zip(view.get_batch(ids), local.get_batch(ids)):
            np.testing.assert_array_equal(got, want)
        same_frames(view.to_pandas(), local.to_pandas())


def test_a_store_on_a_url_pickles_and_reopens_by_url(s3_server, s3_url):
    import pickle

    with h5store.open(s3_url, storage_options=s3_server.storage_options) as store:
        clone = pickle.loads(pickle.dumps(store))
        try:
            assert clone.path == s3_url and clone.ids().tolist() == store.ids().tolist()
            first = int(store.ids()[0])
            np.testing.assert_array_equal(clone[first], store[first])
        finally:
            clone.close()


def test_server_stopping_mid_batch_names_the_url_and_the_ids(http_server, http_url):
    with h5store.open(http_url) as healthy:
        ids = healthy.ids().tolist()
    relay = Relay(http_server.port, budget=3_000_000)  # enough for the open, not the verify
    url = http_url.replace(f":{http_server.port}/", f":{relay.port}/")
    with h5store.open(url) as store:
        relay.kill()
        start = time.monotonic()
        with pytest.raises(RemoteReadError) as caught:
            store.get_batch(ids[:50])
        assert time.monotonic() - start < RETRY_SECONDS + 10
        assert url in str(caught.value) and str(ids[0]) in str(caught.value)


def _read_in_child(store, ids, queue):
    try:
        queue.put([image.tobytes() for image in store.get_batch(ids)])
    except BaseException as exc:  # reported to the parent, which fails the test
        queue.put(repr(exc))


def test_a_forked_child_reads_a_store_its_parent_opened(s3_url, http_url):
    """obstore's runtime does not survive fork: a forked child (a DataLoader worker) reads
    through the standard library client, with the same answers and no hang."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for url in (s3_url, http_url):
        with h5store.open(url) as store:
            ids = store.ids()[::50].tolist()
            want = [image.tobytes() for image in store.get_batch(ids)]
            queue = context.Queue()
            child = context.Process(target=_read_in_child, args=(store, ids, queue))
            child.start()
            got = queue.get(timeout=60)
            child.join(60)
            assert got == want, got


def test_reading_commands_take_a_url(s3_url, http_url, local_store, tmp_path, capsys, monkeypatch):
    from h5store.cli import main

    def run(*args):
        status = main([str(a) for a in args])
        return status, capsys.readouterr()

    status, out = run("info", s3_url, "--json")
    assert status == 0 and json_loads(out.out)["images"] == N_IMAGES
    status, out = run("query", http_url, "--label", "cat", "--json", "--limit", N_IMAGES)
    with h5store.open(local_store) as local:
        cats = local.query(label="cat").tolist()
        first = int(local.ids()[0])
        want = local.get_encoded(first)
    assert status == 0 and [r["id"] for r in json_loads(out.out)["images"]] == cats
    assert run("show", f"{s3_url}#{first}", "--raw", "-o", tmp_path / "one.jpg")[0] == 0
    assert (tmp_path / "one.jpg").read_bytes() == want
    assert run("index", s3_url, "--csv", tmp_path / "index.csv")[0] == 0
    assert len((tmp_path / "index.csv").read_text().splitlines()) == N_IMAGES + 1
    assert run("export", http_url, tmp_path / "out")[0] == 0
    assert sum(len(files) for _, _, files in os.walk(tmp_path / "out")) == N_IMAGES + 1
    status, out = run("verify", s3_url)
    assert status == 0 and "all intact" in out.out
    status, out = run("import", tmp_path / "out", s3_url)
    assert status == 2 and "write it locally" in out.err
    wrong = "wrong-secret-for-the-cli"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    status, out = run("info", s3_url)
    assert status == 2 and s3_url in out.err and "access denied" in out.err
    assert wrong not in out.err


def json_loads(text):
    import json

    return json.loads(text)


def test_a_batch_read_by_url_checks_every_payloads_crc(s3_server, tmp_path):
    # Raw pixels: a flipped byte decodes without complaint, so only the CRC-32 can tell.
    path = tmp_path / "raw.h5"
    rng = np.random.default_rng(7)
    images = rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)
    with h5store.open(path, "w", codec="raw") as store:
        store.add_batch(images, labels=["a"] * 8)
    with h5store.open(path) as store:
        offset = int(store.index["offset"][5])
    data = bytearray(path.read_bytes())
    data[offset + 7] ^= 0x01
    path.write_bytes(bytes(data))
    url = s3_server.upload(path, "raw-damaged.h5")
    with h5store.open(url) as store:
        np.testing.assert_array_equal(store.get_batch([0, 1, 2]), images[:3])
        with pytest.raises(h5store.DamagedImageError) as caught:
            store.get_batch([4, 5, 6])
        assert caught.value.image_id == 5
