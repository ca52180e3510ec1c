"""Real servers for the remote tests: SeaweedFS's S3 gateway and Debian's nginx (HTTP ranges).

.ci/run starts both (.ci/seaweedfs.sh, .ci/nginx.sh) and exports where they are; the session
fixtures ``s3_server`` and ``http_server`` use those servers, or start their own through the
same scripts (and stop them at the end of the session). A server that cannot be had is a
failure under CI (a skipped remote test proves nothing) and a skip on a developer's machine.
Nothing is mocked.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

CI_DIR = Path(__file__).resolve().parent.parent / ".ci"

S3_VARS = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_ALLOW_HTTP",
    "H5STORE_TEST_S3_BUCKET",
)
HTTP_VARS = ("H5STORE_TEST_HTTP_URL", "H5STORE_HTTP_ROOT")


def unavailable(message: str):
    if os.environ.get("CI"):
        pytest.fail(message + " (.ci/run starts it; under CI a missing server is a failure)")
    pytest.skip(message)


def start_with_script(script: str) -> tuple[dict[str, str], str]:
    """Run ``.ci/<script> start``; the variables it exports, and the state directory to stop."""
    env = dict(os.environ, PYTHON=sys.executable)
    try:
        done = subprocess.run(
            ["bash", str(CI_DIR / script), "start"],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f".ci/{script} start: {exc}")
    if done.returncode != 0:
        unavailable(f".ci/{script} start failed:\n{done.stderr[-3000:]}")
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("export "), done.stdout
    values = dict(word.split("=", 1) for word in shlex.split(line)[1:])
    state = next(v for k, v in values.items() if k.endswith("_DIR"))
    return values, state


def stop_with_script(script: str, state: str) -> None:
    subprocess.run(["bash", str(CI_DIR / script), "stop", state], timeout=60, check=False)


@dataclass
class S3Server:
    """A bucket on a running S3 server; credentials as obstore and boto3 read them."""

    endpoint: str
    bucket: str
    access_key_id: str
    secret_access_key: str
    region: str

    @property
    def storage_options(self) -> dict[str, str]:
        """What a caller passes when the AWS_* variables are not set (obstore's config keys)."""
        return {
            "endpoint": self.endpoint,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "region": self.region,
            "allow_http": "true",
        }

    @property
    def store(self):
        """An obstore store of the bucket (obstore is in the remote extra)."""
        from obstore.store import S3Store

        config = {k: v for k, v in self.storage_options.items() if k != "allow_http"}
        return S3Store(self.bucket, config=config, client_options={"allow_http": True})

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def upload(self, path, key: str) -> str:
        """Put a local file into the bucket (multipart when large); its s3:// URL."""
        import obstore

        obstore.put(self.store, key, Path(path))
        return self.url(key)


@dataclass
class HTTPServer:
    """nginx serving the directory ``root`` at ``base_url`` (Range requests, files read fresh)."""

    base_url: str
    root: str

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1].split("/")[0])

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def path(self, name: str) -> str:
        """Where a file served as ``url(name)`` lives (a writer may append to it in place)."""
        return os.path.join(self.root, name)

    def upload(self, path, name: str) -> str:
        shutil.copyfile(path, self.path(name))
        return self.url(name)


@pytest.fixture(scope="session")
def s3_server():
    if all(os.environ.get(v) for v in S3_VARS):
        env, state = os.environ, None
    else:
        try:
            import obstore  # noqa: F401
        except ImportError:
            unavailable("obstore is not installed (pip install -e '.[remote]')")
        env, state = start_with_script("seaweedfs.sh")
        os.environ.update({k: env[k] for k in S3_VARS})  # a URL alone must then work
    yield S3Server(
        endpoint=env["AWS_ENDPOINT_URL"],
        bucket=env["H5STORE_TEST_S3_BUCKET"],
        access_key_id=env["AWS_ACCESS_KEY_ID"],
        secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region=env["AWS_REGION"],
    )
    if state is not None:
        stop_with_script("seaweedfs.sh", state)


@pytest.fixture(scope="session")
def http_server():
    if all(os.environ.get(v) for v in HTTP_VARS):
        env, state = os.environ, None
    else:
        env, state = start_with_script("nginx.sh")
    yield HTTPServer(base_url=env["H5STORE_TEST_HTTP_URL"], root=env["H5STORE_HTTP_ROOT"])
    if state is not None:
        stop_with_script("nginx.sh", state)
