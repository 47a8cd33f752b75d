"""Bounds on how long a client may take to send a request: its headers (``--header-timeout``, here, in uvicorn's
HTTP protocol) and its body (``--body-timeout``, in `requests.read_image`, answered 408); an idle keep-alive
connection is closed after uvicorn's ``--timeout-keep-alive``.

    uvicorn.Config(app, http=header_deadline_protocol(10.0))   # 408 and close when headers take over 10 s
"""

from __future__ import annotations

import json

TIMEOUT_408 = "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"


def header_deadline_protocol(seconds: float):
    """uvicorn's httptools protocol, with a deadline for a request's headers: counted from the connection's
    opening, and again from the end of each response (a keep-alive connection's next request). A client that
    has not sent a whole request head by then gets 408 and the connection is closed. (uvicorn alone keeps a
    connection that sends its headers slowly, or nothing at all, open for ever.)"""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # here: uvicorn comes with the extra

    body = json.dumps({"detail": f"request headers not received within {seconds:g} s"}).encode()
    answer = (TIMEOUT_408 + f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    class HeaderDeadlineProtocol(HttpToolsProtocol):
        _header_timer = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def on_headers_complete(self):
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self):
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

        def _arm(self):
            self._disarm()
            self._header_timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self):
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self):
            self._header_timer = None
            if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
                return  # a request in progress: its body has its own deadline
            self.transport.write(answer)
            self.transport.close()

    return HeaderDeadlineProtocol
