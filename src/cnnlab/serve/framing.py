"""The HTTP server under the app: uvicorn, with its malformed-request answers in the one
error shape, on a socket bound before it starts.

Malformed framing (an unparsable request line or header, a bad Content-Length, both
Content-Length and Transfer-Encoding, a broken chunk) is refused by uvicorn's parser before
any application code runs, with a plain-text 400. uvicorn's HTTP protocol classes write that
answer in one method, ``send_400_response``; :func:`protocol_class` overrides it to write
``{"error": {"type": "bad_request", ...}}`` instead (uvicorn has no public hook for it). What
the parser accepts reaches the app, whose guard and handlers answer in the same shape (a
Content-Length over the body limit: 413; a 200 kB URL: 404).
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from cnnlab.errors import ConfigError
from cnnlab.serve.errors import error_body

__all__ = ["bind", "protocol_class", "server_config"]


def protocol_class() -> type:
    """uvicorn's fastest available HTTP protocol (httptools, else h11) answering malformed
    requests in JSON."""
    base: type
    try:
        import httptools  # noqa: F401 - only whether it is installed
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

    class JsonErrorProtocol(base):
        def send_400_response(self, msg: str) -> None:
            # uvicorn's msg is always "Invalid HTTP request received."
            body = error_body("bad_request", "malformed HTTP request: the request line, a "
                              "header or the body framing (Content-Length, Transfer-Encoding, "
                              "chunks) cannot be parsed")
            head = [b"HTTP/1.1 400 Bad Request"]
            head += [name + b": " + value for name, value in self.server_state.default_headers]
            head += [b"content-type: application/json",
                     b"content-length: " + str(len(body)).encode(), b"connection: close"]
            self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
            self.transport.close()

    JsonErrorProtocol.__name__ = JsonErrorProtocol.__qualname__ = f"Json{base.__name__}"
    return JsonErrorProtocol


def server_config(app: Any, *, log_level: str = "info") -> Any:
    """The uvicorn configuration the service runs with (also the tests' loopback servers)."""
    import uvicorn

    # ws="none": the service has no websocket routes
    return uvicorn.Config(app, http=protocol_class(), ws="none", log_level=log_level)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port``, bound before uvicorn starts so that a
    port in use is an error that names it.

    Raises:
        ConfigError: the port is out of range or in use, the host unknown, or binding
            refused.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"port must be an integer from 1 to 65535; got {port!r}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"cannot listen on host {host!r}: it does not resolve ({e}); use "
                          "an address of this machine, such as 127.0.0.1 or 0.0.0.0") from e
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use by another program; stop it "
                              "or choose another port") from e
        if e.errno == errno.EACCES:
            raise ConfigError(f"port {port} on {host} needs privileges this user does not "
                              "have; choose a port from 1024 up") from e
        raise ConfigError(f"cannot listen on {host} port {port}: {e.strerror or e}") from e
    sock.set_inheritable(True)
    return sock
