"""Nobody else on the network: ZeroMQ CURVE on every tcp socket between our processes, from one shared secret.

Binds stay on loopback (or ipc) unless the operator names another address; then CLUSTER_SECRET is required
(`check_bind`, which `start` and every binding process call), and the same secret on every host. From it
each host derives the same two key pairs (a CURVE secret key is any 32 bytes): the servers' (the gateway's
worker socket, the writer's socket) and the clients' (workers, the gateway's link to the writer). A client
must know the servers' public key to complete the handshake, and the servers' authenticator (ZAP) admits
only the clients' public key, so a peer without the secret can neither register as a worker and receive
texts nor send rows to the writer. Every refused handshake is logged by `watch_handshakes`.

ipc and inproc sockets stay plain: only processes of this host's user can reach them (file permissions).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import zmq
import zmq.auth.thread
from zmq.utils import monitor, z85

log = logging.getLogger(__name__)
ZAP_DOMAIN = "llama-embeddings"


class OpenBindRefused(ValueError):
    """A bind address other hosts can reach, without CLUSTER_SECRET."""


@dataclass(frozen=True)
class CurveKeys:
    """The two key pairs every host derives from CLUSTER_SECRET (z85-encoded, as libzmq takes them)."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes


def curve_keys(secret: str) -> CurveKeys:
    """The same keys on every host that knows `secret`."""
    def secret_key(role: str) -> bytes:
        return z85.encode(hashlib.sha256(f"{ZAP_DOMAIN}/{role}/{secret}".encode()).digest())

    server_secret, client_secret = secret_key("server"), secret_key("client")
    return CurveKeys(zmq.curve_public(server_secret), server_secret, zmq.curve_public(client_secret), client_secret)


def is_tcp(address: str) -> bool:
    """True for a tcp:// endpoint: the only transport other hosts can reach, so the only one CURVE guards."""
    return address.startswith("tcp://")


def reachable_from_other_hosts(address: str) -> bool:
    """True for a tcp bind on anything but a loopback address (`*` and 0.0.0.0 included)."""
    if not is_tcp(address):
        return False
    host = (urlsplit(address).hostname or "*").strip("[]")
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface or a host name
        return True


def check_bind(setting: str, address: str, secret: str) -> None:
    """Refuse to bind where other hosts can connect unless the peers must prove they know CLUSTER_SECRET."""
    if reachable_from_other_hosts(address) and not secret:
        raise OpenBindRefused(
            f"{setting}={address} can be reached from other hosts; set CLUSTER_SECRET (the same on every host) so "
            "that only our processes can connect, or bind a loopback address")


def secure_server(socket: zmq.Socket, address: str, secret: str) -> None:
    """Make `socket` (before bind) a CURVE server admitting only clients that know `secret`; tcp only."""
    if not (secret and is_tcp(address)):
        return
    keys = curve_keys(secret)
    socket.curve_server = True
    socket.curve_secretkey = keys.server_secret
    socket.curve_publickey = keys.server_public
    socket.zap_domain = ZAP_DOMAIN.encode()


def secure_client(socket: zmq.Socket, address: str, secret: str) -> None:
    """Make `socket` (before connect) a CURVE client of our servers; tcp only."""
    if not (secret and is_tcp(address)):
        return
    keys = curve_keys(secret)
    socket.curve_secretkey = keys.client_secret
    socket.curve_publickey = keys.client_public
    socket.curve_serverkey = keys.server_public


class _OurClientsOnly:
    """The authenticator's check: the client's long-term public key is the one derived from the secret."""

    def __init__(self, client_public: bytes) -> None:
        self._allowed = client_public

    def callback(self, domain: str, key: bytes) -> bool:
        if key == self._allowed:
            return True
        log.warning("refused a CURVE client with an unknown key %s (it does not know CLUSTER_SECRET)",
                    key.decode(errors="replace"))
        return False


def start_authenticator(context: zmq.Context, secret: str) -> zmq.auth.thread.ThreadAuthenticator | None:
    """The ZAP handler of a process with CURVE servers (one per context); None without a secret."""
    if not secret:
        return None
    authenticator = zmq.auth.thread.ThreadAuthenticator(context, log=logging.getLogger("zmq.auth"))
    authenticator.start()
    authenticator.configure_curve_callback(domain=ZAP_DOMAIN,
                                           credentials_provider=_OurClientsOnly(curve_keys(secret).client_public))
    return authenticator


_FAILED = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH


def watch_handshakes(socket: zmq.Socket, address: str, secret: str, name: str) -> None:
    """Log every handshake `socket` refuses (a peer with another secret, or none), from a thread of its own.

    Call on the thread that owns `socket`, after it is bound; the monitor's own socket is read by the thread.
    """
    if not (secret and is_tcp(address)):
        return
    endpoint = f"inproc://handshakes-{name}-{id(socket)}"
    socket.monitor(endpoint, _FAILED)
    reader: zmq.Socket = zmq.Context.shadow(socket.context.underlying).socket(zmq.PAIR)
    reader.connect(endpoint)

    def run() -> None:
        try:
            while True:
                event = monitor.recv_monitor_message(reader)
                if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                    return
                log.warning("%s on %s refused a peer: handshake failed (%s, code %s): it does not know "
                            "CLUSTER_SECRET", name, address, _EVENT_NAMES.get(int(event["event"]), "other"),
                            event["value"])
        except zmq.ZMQError:  # the context is terminating
            pass
        finally:
            reader.close(linger=0)

    threading.Thread(target=run, name=f"handshakes-{name}", daemon=True).start()


_EVENT_NAMES: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "no detail",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "refused by the authenticator",
}
