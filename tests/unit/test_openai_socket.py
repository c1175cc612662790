"""The HTTP endpoint's listening socket: accepted connections get TCP_NODELAY."""

from __future__ import annotations

import asyncio
import socket

from services.refiner.openai_http import _bind


async def test_accepted_connections_send_without_nagle_delay() -> None:
    """asyncio sets TCP_NODELAY only where the socket's proto is IPPROTO_TCP; a socket made
    with proto 0 kept Nagle on, and a kept-alive response's body waited ~40 ms."""
    sock = _bind("127.0.0.1", 0)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def on_connect(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = writer.get_extra_info("socket")
        accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connect, sock=sock)
    try:
        port = sock.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(accepted, 5) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
