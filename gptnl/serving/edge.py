"""What happens to a request before and after the gateway's routes: the server's limits, and the
one `finally` that writes every audit line.

Two layers, because a slow or oversized client must be stopped before there is a request at all:

- `GuardedH11` (uvicorn's h11 protocol with two additions) answers 431 to a request line plus
  headers over `max_header_bytes` and 408 to a connection that has not sent its whole head within
  `header_timeout_s` of its first byte (or of opening); uvicorn has neither limit of its own.
- `Edge` (ASGI middleware, outermost) counts headers (431 over `max_headers`), reads the body
  within `body_timeout_s` and `max_body_bytes` (408, 413), holds the whole request to
  `request_timeout_s` (408), turns anything unexpected into a 500, and completes the request's
  `Call` in its `finally`: the lease released and exactly one audit line, also for client aborts.

Every refusal is in OpenAI's error shape and audited.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
import uuid

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from gptnl.config import GatewayConfig
from gptnl.serving.gateway import ENDPOINTS, Call, Gateway
from gptnl.serving.protocol import ApiError

log = logging.getLogger("gptnl.gateway")
UNAUDITED = {"/health", "/metrics"}
PHRASES = {408: "Request Timeout", 413: "Content Too Large", 431: "Request Header Fields Too Large",
           500: "Internal Server Error"}


class ClientGone(Exception):
    pass


def endpoint_of(path: str) -> str:
    return ENDPOINTS.get(path) or ("models" if path == "/v1/models" else "unknown")


async def respond(send, err: ApiError, request_id: str) -> None:
    body = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"x-request-id", request_id.encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Edge:
    def __init__(self, app, gateway: Gateway, cfg: GatewayConfig):
        self.app, self.gateway, self.cfg = app, gateway, cfg

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in UNAUDITED:
            return await self.app(scope, receive, send)
        call = Call(uuid.uuid4().hex, endpoint_of(scope["path"]))
        scope.setdefault("state", {})["call"] = call
        started = False

        async def send_(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started, call.http_status = True, message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                call.answered = True
                if call.stream_done:  # a whole stream: its closing line goes out after the audit line
                    message = {**message, "body": message.get("body", b"") + b"data: [DONE]\n\n"}
                await self.gateway.complete(call)
            await send(message)

        deadline = asyncio.timeout(self.cfg.request_timeout_s)
        try:
            async with deadline:
                if len(scope["headers"]) > self.cfg.max_headers:
                    raise ApiError(431, f"the request has {len(scope['headers'])} headers; at most "
                                        f"{self.cfg.max_headers}", "headers_too_large")
                self.gateway.identify(call, scope["headers"])
                scope["state"]["body"] = await self._read_body(receive)
                await self.app(scope, self._after_body(receive, call), send_)
        except ApiError as err:
            call.status, call.error = err.status, err.message
            if not started:
                await respond(send_, err, call.request_id)
        except ClientGone:
            call.client_gone = True
        except TimeoutError:
            if not deadline.expired():
                raise
            call.status, call.error = 408, f"the request took longer than {self.cfg.request_timeout_s:g} s"
            if not started:
                await respond(send_, ApiError(408, call.error, "request_timeout"), call.request_id)
        except Exception as exc:  # noqa: BLE001 (a bug must still answer in OpenAI's shape and be audited)
            where = traceback.extract_tb(exc.__traceback__)[-1]
            log.error("request %s failed: %s at %s:%s", call.request_id, type(exc).__name__, where.filename,
                      where.lineno)
            call.status, call.error = 500, f"internal error ({type(exc).__name__})"
            if not started:
                await respond(send_, ApiError(500, f"internal error in the gateway; request id {call.request_id}",
                                              "internal_error"), call.request_id)
        finally:
            if call.client_gone and not call.answered and call.status in (None, 200):
                call.status, call.error = 499, "the client closed the connection"
            await self.gateway.complete(call)

    async def _read_body(self, receive) -> bytes:
        """The whole body, within the size and time limits."""
        limit, body = self.cfg.max_body_bytes, bytearray()
        loop = asyncio.get_running_loop()
        until = loop.time() + self.cfg.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, until - loop.time()))
            except TimeoutError:
                raise ApiError(408, f"the request body was not sent within {self.cfg.body_timeout_s:g} s",
                               "request_timeout") from None
            if message["type"] == "http.disconnect":
                raise ClientGone
            body += message.get("body", b"")
            if len(body) > limit:
                raise ApiError(413, f"request body is over the limit of {limit} bytes", "request_too_large")
            if not message.get("more_body"):
                return bytes(body)

    @staticmethod
    def _after_body(receive, call: Call):
        """The app's receive once the body is read: it only learns whether the client went away."""
        async def wrapped():
            message = await receive()
            if message["type"] == "http.disconnect":
                call.client_gone = True
            return message
        return wrapped


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a head size limit (431) and a head timeout (408), both audited."""

    gateway: Gateway
    cfg: GatewayConfig

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._head_timer = None
        self._rejected = False
        self._arm()

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.cfg.header_timeout_s, self._head_timeout)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        if self.conn.their_state is h11.IDLE:  # a request head is arriving
            head = self.conn.trailing_data[0] + data
            end = head.find(b"\r\n\r\n")
            size = end if end >= 0 else len(head)
            if size > self.cfg.max_header_bytes:
                return self._reject(431, f"the request line and headers are over {self.cfg.max_header_bytes} bytes",
                                    "headers_too_large")
            self._arm()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self._arm()  # a pipelined request has started

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.conn.their_state is not h11.IDLE or (self.cycle is not None and not self.cycle.response_complete):
            return  # the head is in, or a request is being answered
        if self.conn.trailing_data[0]:
            self._reject(408, f"the request headers were not sent within {self.cfg.header_timeout_s:g} s",
                         "request_timeout")
        else:
            self.transport.close()  # nothing was asked: an idle connection is just closed

    def _reject(self, status: int, message: str, code: str) -> None:
        self._rejected = True
        self._disarm()
        call = Call(uuid.uuid4().hex, "unknown", status=status, error=message)
        body = json.dumps(ApiError(status, message, code).body()).encode()
        self.transport.write(f"HTTP/1.1 {status} {PHRASES[status]}\r\ncontent-type: application/json\r\n"
                             f"content-length: {len(body)}\r\nx-request-id: {call.request_id}\r\n"
                             "connection: close\r\n\r\n".encode() + body)
        self.transport.close()
        self.gateway.finish(call)


def protocol_for(gateway: Gateway, cfg: GatewayConfig) -> type[GuardedH11]:
    """The protocol class uvicorn instantiates per connection, bound to this gateway and config."""
    return type("GatewayH11", (GuardedH11,), {"gateway": gateway, "cfg": cfg})
