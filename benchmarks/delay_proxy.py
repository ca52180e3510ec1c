"""A TCP proxy that adds a round trip to every request, and counts requests and bytes.

This machine's kernel has no netem, so the remote benchmark puts this between its clients and
the local servers to stand in for a network: every byte a client sends is held for ``rtt``
seconds before it goes on to the server (a request waits one round trip; the server's answer
comes back at once), and opening a connection costs one round trip too (TCP's handshake; TLS
would add more). Requests are counted by their HTTP request lines on the way up, which is
exact for the reads measured here (GET and HEAD carry no body); bytes are counted both ways,
so bytes down include HTTP headers, as on a real network.

The proxy runs in its own process (so that it never competes for the benchmark's GIL) and is
steered through shared counters: ``DelayProxy(target).start()``, ``.rtt = 0.02``, ``.reset()``,
``.counts()``, ``.stop()``. ``.meter`` is the part a measuring process needs (``url()``,
``reset()``, ``counts()``): it can be handed to a process started with the spawn method.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import re
import socket
import time

REQUEST_LINE = re.compile(rb"(?:GET|HEAD|PUT|POST|DELETE) \S+ HTTP/1\.[01]\r\n")
CHUNK = 1 << 16


async def _serve(listener: socket.socket, target: tuple[str, int], shared: dict) -> None:
    loop = asyncio.get_running_loop()

    async def pump_up(reader, up_writer) -> None:
        # Every chunk is held until one round trip after it arrived, in order: a pipelined or
        # concurrent request on another connection is not held up behind this one.
        queue: asyncio.Queue = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if data is None:
                    break
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                up_writer.write(data)
                await up_writer.drain()
            if up_writer.can_write_eof():
                up_writer.write_eof()

        sender = asyncio.create_task(send())
        try:
            while data := await reader.read(CHUNK):
                with shared["requests"].get_lock():
                    shared["requests"].value += len(REQUEST_LINE.findall(data))
                with shared["bytes_up"].get_lock():
                    shared["bytes_up"].value += len(data)
                queue.put_nowait((loop.time() + shared["rtt"].value, data))
        finally:
            queue.put_nowait((0, None))
            await sender

    async def pump_down(up_reader, writer) -> None:
        while data := await up_reader.read(CHUNK):
            with shared["bytes_down"].get_lock():
                shared["bytes_down"].value += len(data)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def handle(reader, writer) -> None:
        with shared["connections"].get_lock():
            shared["connections"].value += 1
        rtt = shared["rtt"].value
        if rtt:
            await asyncio.sleep(rtt)  # the handshake's round trip
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(pump_up(reader, up_writer), pump_down(up_reader, writer))
        except (ConnectionError, OSError):
            pass
        finally:
            for w in (writer, up_writer):
                w.close()

    server = await asyncio.start_server(handle, sock=listener, limit=CHUNK)
    async with server:
        await server.serve_forever()


def _run(listener: socket.socket, target: tuple[str, int], shared: dict) -> None:
    asyncio.run(_serve(listener, target, shared))


class Meter:
    """The proxy's address and counters, without its process (picklable at process start)."""

    NAMES = ("requests", "connections", "bytes_up", "bytes_down")

    def __init__(self, port: int, shared: dict):
        self.port, self._shared = port, shared

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def reset(self) -> None:
        for name in self.NAMES:
            self._shared[name].value = 0

    def counts(self) -> dict[str, int]:
        return {name: int(self._shared[name].value) for name in self.NAMES}


class DelayProxy:
    """``127.0.0.1:<port>`` forwarding to ``target`` with a settable round trip."""

    def __init__(self, target_host: str, target_port: int, rtt: float = 0.0):
        self.target = (target_host, int(target_port))
        ctx = mp.get_context("spawn")  # no inherited threads (obstore's runtime, the pools)
        self._ctx = ctx
        self._shared = {
            "rtt": ctx.Value("d", rtt),
            "requests": ctx.Value("q", 0),
            "connections": ctx.Value("q", 0),
            "bytes_up": ctx.Value("q", 0),
            "bytes_down": ctx.Value("q", 0),
        }
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(512)
        self.port = self._listener.getsockname()[1]
        self.meter = Meter(self.port, self._shared)
        self._process = None

    def start(self) -> DelayProxy:
        self._process = self._ctx.Process(
            target=_run, args=(self._listener, self.target, self._shared), daemon=True
        )
        self._process.start()
        deadline = time.monotonic() + 30
        while True:  # answering once a connection through it reaches the target
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def rtt(self) -> float:
        return self._shared["rtt"].value

    @rtt.setter
    def rtt(self, seconds: float) -> None:
        self._shared["rtt"].value = float(seconds)

    def reset(self) -> None:
        self.meter.reset()

    def counts(self) -> dict[str, int]:
        return self.meter.counts()

    def url(self, scheme: str = "http") -> str:
        return self.meter.url(scheme)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.join(10)
            self._process = None
        self._listener.close()
