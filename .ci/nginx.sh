#!/usr/bin/env bash
# A throw-away HTTP server with Range support for the remote tests and benchmarks:
# `source .ci/nginx.sh; start_nginx` runs Debian's nginx (apt-get install nginx; .ci/run does)
# as the calling user, from a temporary directory, on 127.0.0.1 on a free port, serving
# $H5STORE_HTTP_ROOT at $H5STORE_TEST_HTTP_URL. Tests drop files into that directory; a file
# that a writer is still appending to is served at its current size (no caching of open file
# descriptors or of sizes). `stop_nginx` (or `.ci/nginx.sh stop DIR`) stops it and removes the
# directory. State lives in $H5STORE_HTTP_DIR.
set -euo pipefail

nginx_bin() {
    local bin
    bin=$(command -v nginx 2>/dev/null || true)
    [ -n "$bin" ] || [ ! -x /usr/sbin/nginx ] || bin=/usr/sbin/nginx
    [ -n "$bin" ] || { echo "nginx.sh: nginx is not installed (apt-get install nginx)" >&2; return 1; }
    echo "$bin"
}

start_nginx() {
    local bin dir port
    bin=$(nginx_bin)
    dir=$(mktemp -d /tmp/h5store-http.XXXXXX)
    mkdir -p "$dir/root" "$dir/tmp"
    chmod 755 "$dir" "$dir/root"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # Everything nginx writes (pid, logs, temp files) stays in $dir, so that it runs without
    # root; as root, `user` keeps the workers as root too, since they must read the test files.
    cat >"$dir/nginx.conf" <<EOF
daemon on;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
$([ "$(id -u)" = 0 ] && echo "user root;")
events { worker_connections 1024; }
http {
    access_log $dir/access.log;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    default_type application/octet-stream;
    # A file is read fresh on every request: a store being appended to is served at its last
    # size, and sendfile is off so that a file growing under a request cannot be cut short.
    open_file_cache off;
    sendfile off;
    etag off;
    keepalive_requests 100000;
    server {
        listen 127.0.0.1:$port;
        root $dir/root;
        location / { autoindex on; }
    }
}
EOF
    "$bin" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" \
        || { cat "$dir/error.log" >&2 2>/dev/null; rm -rf "$dir"; return 1; }
    export H5STORE_HTTP_DIR="$dir"
    export H5STORE_HTTP_ROOT="$dir/root"
    export H5STORE_TEST_HTTP_URL="http://127.0.0.1:$port"
    local i
    for i in $(seq 100); do  # daemon mode returns once the socket is bound; be sure anyway
        python3 -c "import urllib.request as u; u.urlopen('$H5STORE_TEST_HTTP_URL/', timeout=2)" \
            2>/dev/null && break
        [ "$i" = 100 ] && { echo "nginx.sh: nginx did not answer" >&2; stop_nginx "$dir"; return 1; }
        sleep 0.1
    done
    echo "$H5STORE_TEST_HTTP_URL" >"$dir/url"
}

stop_nginx() {
    local dir="${1:-${H5STORE_HTTP_DIR:-}}"
    [ -n "$dir" ] && [ -f "$dir/nginx.conf" ] || return 0
    if [ -f "$dir/nginx.pid" ]; then
        "$(nginx_bin)" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -s stop 2>/dev/null || true
        for _ in $(seq 50); do [ -f "$dir/nginx.pid" ] || break; sleep 0.1; done
    fi
    rm -rf "$dir"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # executed, not sourced
    case "${1:-}" in
        start)
            start_nginx
            echo "export H5STORE_HTTP_DIR=$H5STORE_HTTP_DIR H5STORE_HTTP_ROOT=$H5STORE_HTTP_ROOT" \
                "H5STORE_TEST_HTTP_URL=$H5STORE_TEST_HTTP_URL"
            ;;
        stop) stop_nginx "${2:-}" ;;
        *) echo "usage: .ci/nginx.sh start | stop [DIR]" >&2; exit 2 ;;
    esac
fi
