"""The servers the remote tests read from are real and behave as the tests assume: both serve
byte ranges, nginx serves a file at its current size while it grows, and SeaweedFS checks the
signature of every request (the wrong-credentials tests need a refusal to be possible)."""

import os
import urllib.request

import pytest

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes, every offset recognisable


def test_s3_ranged_get_returns_the_bytes_asked_for(s3_server, tmp_path):
    import obstore  # after the fixture, which fails under CI if it is missing

    local = tmp_path / "payload.bin"
    local.write_bytes(PAYLOAD)
    url = s3_server.upload(local, "servers/payload.bin")
    assert url == f"s3://{s3_server.bucket}/servers/payload.bin"
    got = obstore.get_ranges(
        s3_server.store, "servers/payload.bin", starts=[5, 4000], ends=[9, 4100]
    )
    assert [bytes(b) for b in got] == [PAYLOAD[5:9], PAYLOAD[4000:4100]]


def test_s3_refuses_wrong_and_missing_credentials(s3_server, tmp_path):
    import obstore
    from obstore.exceptions import PermissionDeniedError
    from obstore.store import S3Store

    local = tmp_path / "payload.bin"
    local.write_bytes(PAYLOAD)
    s3_server.upload(local, "servers/secret.bin")
    options = {"endpoint": s3_server.endpoint, "region": s3_server.region}
    wrong = S3Store(
        s3_server.bucket,
        config={**options, "access_key_id": s3_server.access_key_id, "secret_access_key": "nope"},
        client_options={"allow_http": True},
    )
    anonymous = S3Store(
        s3_server.bucket,
        config={**options, "skip_signature": True},
        client_options={"allow_http": True},
    )
    for store in (wrong, anonymous):
        with pytest.raises(PermissionDeniedError, match="403"):
            obstore.get_range(store, "servers/secret.bin", start=0, end=4)


def test_http_ranged_get_follows_a_growing_file(http_server):
    def get_range(start, end):
        request = urllib.request.Request(
            http_server.url("growing.bin"), headers={"Range": f"bytes={start}-{end - 1}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 206
            return response.read()

    path = http_server.path("growing.bin")
    with open(path, "wb") as fh:
        fh.write(PAYLOAD[:4096])
        fh.flush()
        assert get_range(100, 200) == PAYLOAD[100:200]
        fh.write(PAYLOAD[4096:])
        fh.flush()
        # the bytes appended after the first request are served on the next one
        assert get_range(9000, 9100) == PAYLOAD[9000:9100]
    os.remove(path)
