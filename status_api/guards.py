"""Which browser requests the app serves: the Host they name, the page they come from, their body type.

Binding to loopback does not keep web pages out. Any page the operator opens can send requests to
127.0.0.1 (an HTML form, or `fetch` in no-cors mode, needs no CORS permission to *send*), and a
DNS-rebinding page — its own name re-pointed at 127.0.0.1 — can even read the answers as if it were
same-origin. So every request must name a Host we serve (a loopback name or address, the bound
address, `allowed_hosts`), and a request a browser marks with a foreign `Origin` is refused. Bodies
must be `application/json` (checked where they are read, status_api/training.py): a cross-site page
cannot send that type without a CORS preflight, which this app never grants.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from flask import Flask, current_app, request

from trainhost.config import Settings
from trainhost.jobs.producer import RequestError

WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]", "*"})
DEFAULT_PORTS = {"http": "80", "https": "443"}
SHOWN_CHARS = 100  # how much of a refused header an error repeats


def split_host(value: str) -> tuple[str, str]:
    """`Example.COM:5002` → (`example.com`, `5002`); `[::1]:80` → (`::1`, `80`); no port → ''."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else ""
    if value.count(":") > 1:  # a bare IPv6 address: no port can be told apart
        return value, ""
    name, _, port = value.partition(":")
    return name.rstrip("."), port


def _is_loopback(name: str) -> bool:
    # Browsers resolve localhost and *.localhost to loopback themselves (RFC 6761), so no page can
    # re-point those names; any address in 127.0.0.0/8 or ::1 is this machine.
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class HostPolicy:
    """The Host names this app answers for; ports are not compared (a rebinding page names its own
    host, whatever the port). Bound to a wildcard address, every address of the machine is the bound
    address: any IP literal is accepted (rebinding needs a name of the attacker's), and so is the
    machine's own host name."""

    def __init__(self, bound_host: str, allowed: Iterable[str]):
        names = {split_host(entry)[0] if not entry.startswith(".") else entry.lower() for entry in allowed}
        self.any_address = bound_host.strip().lower() in WILDCARD_BINDS
        names.add(socket.gethostname().lower() if self.any_address else split_host(bound_host)[0])
        self.exact = frozenset(name for name in names if name and not name.startswith("."))
        self.suffixes = tuple(name for name in names if name.startswith("."))  # `.example.com`: its subdomains

    def allows(self, name: str) -> bool:
        return (_is_loopback(name) or name in self.exact or (self.any_address and _is_address(name))
                or any(name.endswith(suffix) or name == suffix[1:] for suffix in self.suffixes))


def _origin_key(origin: str) -> tuple[str, str, str] | None:
    """(scheme, host, port) of an Origin with the scheme's default port filled in; None if it is not
    an http(s) origin (`null`, `file://`, garbage)."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.netloc or parts.path not in ("", "/"):
        return None
    name, port = split_host(parts.netloc)
    return parts.scheme, name, port or DEFAULT_PORTS[parts.scheme]


def same_origin(origin: str, host_header: str, allowed_origins: frozenset[tuple[str, str, str]]) -> bool:
    """Whether a page at `origin` is this app's own (it names the Host the request was sent to) or an
    allowed one. The scheme is not compared with ours: behind a TLS proxy we see http."""
    key = _origin_key(origin)
    if key is None:
        return False
    if key in allowed_origins:
        return True
    name, port = split_host(host_header)
    return (key[1], key[2]) == (name, port or DEFAULT_PORTS[key[0]])


def _shown(value: str) -> str:
    return value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "…"


def install(app: Flask, settings: Settings) -> None:
    """Check Host and Origin before any view (the rq-dashboard mount and static files included)."""
    hosts = HostPolicy(settings.host, settings.allowed_hosts)
    origins = frozenset(key for key in map(_origin_key, settings.allowed_origins) if key is not None)
    app.extensions["trainhost.allowed_origins"] = origins

    @app.before_request
    def _check_host_and_origin() -> None:
        host = request.headers.get("Host")
        # No Host header at all is an HTTP/1.0 client, not a browser: nothing to rebind.
        if host is not None and not hosts.allows(split_host(host)[0]):
            raise RequestError(421, "misdirected_request",
                               f"this server does not answer for the host {_shown(host)!r}; if it is a name of "
                               "this machine, add it to allowed_hosts (TRAINHOST_ALLOWED_HOSTS)")
        origin = request.headers.get("Origin")
        if origin is not None and not same_origin(origin, host or "", origins):
            raise RequestError(403, "cross_origin_refused",
                               f"requests from the web page at {_shown(origin)!r} are refused; if that page may "
                               "use this API, add its origin to allowed_origins (TRAINHOST_ALLOWED_ORIGINS)")


def request_is_same_origin() -> bool:
    """Positive proof that the current request comes from one of our own (or an allowed) pages: the
    browser's `Sec-Fetch-Site: same-origin`, or an Origin (else a Referer) naming us. A page elsewhere
    can make a browser send a GET (an <img>) that carries no Origin at all."""
    if request.headers.get("Sec-Fetch-Site") == "same-origin":
        return True
    origins = current_app.extensions.get("trainhost.allowed_origins", frozenset())
    host = request.headers.get("Host", "")
    origin = request.headers.get("Origin")
    if origin is None and request.headers.get("Referer"):
        try:
            parts = urlsplit(request.headers["Referer"])
        except ValueError:
            return False
        origin = f"{parts.scheme}://{parts.netloc}"
    return origin is not None and same_origin(origin, host, origins)
