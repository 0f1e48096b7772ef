"""uvicorn as ``kb serve`` runs it: bounded request heads, idle connections closed.

uvicorn closes a kept-alive connection 5 s after its last response, but waits forever for the
first request of a connection, and for request heads sent a byte at a time. Here every request
head (the request line and headers) must arrive within ``HEAD_SECONDS`` of the connection
opening or of the previous response ending; otherwise the connection is closed."""

from __future__ import annotations

import asyncio

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_SECONDS = 10.0
KEEP_ALIVE_SECONDS = 5
MAX_HEAD_BYTES = 16 * 1024


class BoundedH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request head."""

    head_seconds = HEAD_SECONDS
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        self._head_timer = self.loop.call_later(self.head_seconds, self._head_too_slow)

    def _cancel_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()  # nothing was asked: nothing to answer

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # a whole request head arrived
            self._cancel_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()  # the next request on this connection has its own deadline

    def connection_lost(self, exc) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)


def serve(app, host: str, port: int, trusted_proxies: tuple[str, ...] = ()) -> None:
    """Run ``app`` until interrupted. ``X-Forwarded-For`` is believed only from ``trusted_proxies``."""
    uvicorn.run(app, host=host, port=port, http=BoundedH11, log_level="warning", server_header=False,
                timeout_keep_alive=KEEP_ALIVE_SECONDS, h11_max_incomplete_event_size=MAX_HEAD_BYTES,
                proxy_headers=bool(trusted_proxies), forwarded_allow_ips=",".join(trusted_proxies) or None)
