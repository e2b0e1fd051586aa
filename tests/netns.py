"""Test hosts: Linux network namespaces joined by veth pairs (`ip netns`, `ip link`; needs root).

Every namespace gets its loopback up and one address per link; traffic stays inside the namespaces a test
made, and the pytest process reaches one of them through a link of its own.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from dataclasses import dataclass, field

_NAMES = itertools.count()


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, text=True, timeout=30)


def unavailable_reason() -> str:
    """Why this machine cannot make test hosts, or "" when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"les-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"`ip netns add` failed here: {getattr(exc, 'stderr', '') or exc}"
    _ip("netns", "delete", probe)
    return ""


@dataclass
class Hosts:
    """Namespaces by name (`host("gateway")`), links between them, and removal of everything at `close()`."""

    prefix: str = field(default_factory=lambda: f"les{os.getpid() % 10000}n{next(_NAMES)}")
    _namespaces: list[str] = field(default_factory=list)
    _root_links: list[str] = field(default_factory=list)
    _links: int = 0

    def host(self, name: str) -> str:
        """The namespace of host `name`, made on first use."""
        namespace = f"{self.prefix}-{name}"
        if namespace not in self._namespaces:
            _ip("netns", "add", namespace)
            self._namespaces.append(namespace)
            _ip("-n", namespace, "link", "set", "lo", "up")
        return namespace

    def launcher(self, name: str) -> tuple[str, ...]:
        """What runs a command on host `name`."""
        return ("ip", "netns", "exec", self.host(name))

    def link(self, a: str, a_address: str, b: str, b_address: str) -> tuple[str, str]:
        """A cable between hosts `a` and `b` (a /24 each side); `a` may be "" for the pytest process's own host.
        Returns the two interface names."""
        self._links += 1
        end_a, end_b = f"{self.prefix}a{self._links}", f"{self.prefix}b{self._links}"
        _ip("link", "add", end_a, "type", "veth", "peer", "name", end_b)
        for end, host, address in ((end_a, a, a_address), (end_b, b, b_address)):
            if host:
                namespace = self.host(host)
                _ip("link", "set", end, "netns", namespace)
                _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", end)
                _ip("-n", namespace, "link", "set", end, "up")
            else:
                self._root_links.append(end)
                _ip("addr", "add", f"{address}/24", "dev", end)
                _ip("link", "set", end, "up")
        return end_a, end_b

    def set_link(self, host: str, interface: str, up: bool) -> None:
        """Plug or unplug host `host`'s end of a cable."""
        _ip("-n", self.host(host), "link", "set", interface, "up" if up else "down")

    def close(self) -> None:
        for end in self._root_links:
            subprocess.run(["ip", "link", "delete", end], capture_output=True, timeout=30)
        for namespace in self._namespaces:
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, timeout=30)
