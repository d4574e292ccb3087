"""Real asyncio programs on netpoll.aio: aiohttp, uvicorn (driven by httpx),
redis-py against a real redis-server."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from netpoll import aio


def run(coro, backend_name):
    return aio.run(coro, backend=backend_name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_aiohttp_app_and_client(backend_name):
    web = pytest.importorskip("aiohttp.web")
    aiohttp = pytest.importorskip("aiohttp")

    async def hello(request):
        return web.json_response({"loop": type(asyncio.get_running_loop()).__name__,
                                  "q": request.query.get("q")})

    async def upload(request):
        body = await request.read()
        return web.Response(body=body[::-1])

    async def ws(request):
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            await sock.send_str(msg.data.upper())
        return sock

    async def main():
        app = web.Application()
        app.add_routes([web.get("/", hello), web.post("/up", upload), web.get("/ws", ws)])
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as s:
                async with s.get(base + "/", params={"q": "x"}) as r:
                    j = await r.json()
                big = os.urandom(1 << 20)
                async with s.post(base + "/up", data=big) as r:
                    back = await r.read()
                many = await asyncio.gather(*(s.get(base + "/") for _ in range(20)))
                statuses = [r.status for r in many]
                for r in many:
                    r.release()
                async with s.ws_connect(base + "/ws") as w:
                    await w.send_str("ping")
                    echoed = (await w.receive()).data
            return j, back == big[::-1], statuses, echoed
        finally:
            await runner.cleanup()

    j, same, statuses, echoed = run(main(), backend_name)
    assert j == {"loop": "EventLoop", "q": "x"}
    assert same
    assert statuses == [200] * 20
    assert echoed == "PING"


def test_uvicorn_asgi_app_driven_by_httpx(backend_name):
    uvicorn = pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        loop = type(asyncio.get_running_loop()).__name__.encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": loop + b" " + body})

    async def main():
        port = free_port()
        # log_config=None: uvicorn would otherwise reconfigure logging for the
        # whole process, closing handlers (and their files) it does not own.
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                lifespan="on")
        server = uvicorn.Server(config)
        serving = asyncio.ensure_future(server.serve())
        try:
            while not server.started:
                assert not serving.done(), serving
                await asyncio.sleep(0.01)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                rs = await asyncio.gather(*(c.post("/", content=b"req%d" % i) for i in range(30)))
            return [r.status_code for r in rs], [r.content for r in rs]
        finally:
            server.should_exit = True
            await serving

    codes, bodies = run(main(), backend_name)
    assert codes == [200] * 30
    assert bodies == [b"EventLoop req%d" % i for i in range(30)]


@pytest.fixture(scope="module")
def redis_server():
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    port = free_port()
    d = tempfile.mkdtemp()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", d],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"redis-server did not start on port {port}")
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(d, ignore_errors=True)


def test_redis_asyncio_client(backend_name, redis_server):
    redis = pytest.importorskip("redis.asyncio")

    async def main():
        r = redis.Redis(host="127.0.0.1", port=redis_server)
        try:
            await r.flushdb()
            await r.set("k", "v")
            got = await r.get("k")
            async with r.pipeline(transaction=True) as p:
                for i in range(100):
                    p.incr("n")
                counts = await p.execute()
            ps = r.pubsub()
            await ps.subscribe("ch")
            await ps.get_message(timeout=5)  # the subscribe confirmation
            await r.publish("ch", "hello")
            msg = None
            for _ in range(50):
                msg = await ps.get_message(ignore_subscribe_messages=True, timeout=0.2)
                if msg:
                    break
            await ps.aclose()
            big = os.urandom(4 << 20)
            await r.set("big", big)
            same = await r.get("big") == big
            return got, counts[-1], msg and msg["data"], same
        finally:
            await r.aclose()

    assert run(main(), backend_name) == (b"v", 100, b"hello", True)
