import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import settings
from remote_servers import http_server, s3_server  # noqa: F401  (session fixtures)

import h5store
from h5store import format as fmt
from h5store.sample import sample_set

# CI runs the same examples every time (a red CI should mean a regression, not a new random
# draw); local runs keep exploring and remember failures in .hypothesis/.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@cache
def photo_crops(n: int = 16, size: int = 64) -> tuple[np.ndarray, list[str]]:
    """Realistic images (crops of the scikit-image photos) and their classes."""
    sample = sample_set(n, size, seed=7)
    return sample.images, sample.true_labels


def file_digest(path) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def assert_every_source_checked(path) -> None:
    """Every row of /sources has its check in /source_crc32, none left unchecked (0)."""
    with h5py.File(path, "r", locking=False) as f:
        sources, checks = f[fmt.SOURCES][()], f[fmt.SOURCE_CRC32][()]
    assert len(sources) and len(checks) == len(sources)
    assert checks.tolist() == [fmt.source_check(raw) for raw in sources.tolist()]
    assert checks.all()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    peak = 255.0 if a.dtype == np.uint8 else 65535.0
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter (no h5store imported unless the code imports it)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout
    )


def _strace_escaped(marker: str) -> str:
    return "".join(f"\\x{b:02x}" for b in marker.encode())


def pwrites_in_window(script: str, args: list[str], trace: str, timeout: float):
    """Run ``script`` with ``args`` under strace and return the (offset, bytes) of each pwrite
    it made between writing "<window>" and "</window>" to stderr, in order."""
    subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=pwrite64,write", "-xx", "-s", "100000000"]
        + ["-o", trace, sys.executable, "-c", script, *args],
        check=True,
        timeout=timeout,
    )
    text = Path(trace).read_text()
    start = text.index(_strace_escaped("<window>"))
    window = text[start : text.index(_strace_escaped("</window>"))]
    return [
        (int(m.group(2)), bytes.fromhex(m.group(1).replace("\\x", "")))
        for m in re.finditer(r'pwrite64\(\d+, "((?:\\x[0-9a-f]{2})*)", \d+, (\d+)\)', window)
    ]


def file_after(before: bytes, writes) -> bytes:
    """The file ``before`` becomes once ``writes`` (offset, bytes) land, in order."""
    image = bytearray(before)
    for offset, data in writes:
        image.extend(bytes(max(0, offset + len(data) - len(image))))
        image[offset : offset + len(data)] = data
    return bytes(image)


def h5store_cli(*args, check=True, cwd=None) -> subprocess.CompletedProcess:
    """The ``h5store`` command line in a fresh interpreter; with ``check``, exit status 0."""
    result = subprocess.run(
        [sys.executable, "-m", "h5store.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "store.h5")


@pytest.fixture
def filled_store(store_path):
    """A closed store with 16 photo crops in several classes, scores and true labels."""
    images, classes = photo_crops()
    rng = np.random.default_rng(0)
    predicted = [c if rng.random() < 0.7 else "cat" for c in classes]
    with h5store.open(store_path, "w") as store:
        store.add_batch(
            images, labels=predicted, scores=rng.random(len(images)), true_labels=classes
        )
    return store_path


h5dump_missing = pytest.mark.skipif(
    shutil.which("h5dump") is None, reason="h5dump (Debian hdf5-tools) not installed"
)


def pytest_report_header(config):
    codecs = ", ".join(h5store.available_codecs())
    return f"h5store {h5store.__version__}, codecs: {codecs}, cpus: {os.cpu_count()}"


_OPENAT = re.compile(r'\bopen(?:at)?\((?:AT_FDCWD|\d+), "((?:[^"\\]|\\.)*)"')


def files_opened(code: str, *args: str, timeout: float = 300) -> tuple[list[str], str]:
    """Run ``code`` in a fresh interpreter under strace; return every path it (or a child)
    asked the system to open, successfully or not, and the whole trace. Needs strace (.ci/run
    installs it); callers skip without it."""
    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, "trace")
        subprocess.run(
            ["strace", "-f", "-qq", "-e", "trace=open,openat,openat2", "-o", trace]
            + [sys.executable, "-c", code, *args],
            check=True,
            timeout=timeout,
        )
        text = Path(trace).read_text()
    return _OPENAT.findall(text), text


needs_strace = pytest.mark.skipif(
    shutil.which("strace") is None, reason="needs strace (.ci/run installs it)"
)


POSTGRES_URL = os.environ.get("H5STORE_TEST_POSTGRES_URL")


def backends(tmp_path):
    return {"sqlite": f"sqlite:///{tmp_path / 'index.db'}", "postgresql": POSTGRES_URL}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    """A database to test against: SQLite in tmp_path, and the PostgreSQL server .ci/run
    starts (a fresh schema per test); under CI a missing server fails the test."""
    import sqlalchemy as sa

    value = backends(tmp_path)[request.param]
    if value is None:
        if os.environ.get("CI"):
            pytest.fail("H5STORE_TEST_POSTGRES_URL is not set: .ci/run starts PostgreSQL")
        pytest.skip("no PostgreSQL: run `eval $(.ci/postgres.sh start)` first")
    if request.param == "postgresql":  # a fresh schema per test: tests do not see each other
        schema = f"t{os.getpid()}_{abs(hash(request.node.name)) % 10**8}"
        engine = sa.create_engine(value)
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        engine.dispose()
        value = (
            sa.engine.make_url(value)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
        yield value
        engine = sa.create_engine(POSTGRES_URL)
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()
    else:
        yield value
