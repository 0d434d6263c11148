"""Builds a container's network before systemd-nspawn starts and removes it after the
container is gone (DESIGN §7): the steps come from netplan, this module only runs them."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cove import netnames, proc
from cove.errors import CoveError
from cove.model import Container
from cove.netplan import Step, net_steps
from cove.nftplan import TABLE, chain, forwarding

if TYPE_CHECKING:
    import subprocess

NETNS_DIR = "/run/netns"


def _ip(step: Step, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = proc.run(step, check=False)
    if check and result.returncode != 0:
        raise CoveError(f"network: `{' '.join(step)}` failed: {result.stderr.strip()}")
    return result


def _batch(ns: str | None, steps: list[Step]) -> None:
    """Run `steps` in one `ip -batch`; a failure names the step that failed."""
    if not steps:
        return
    lines = []
    for step in steps:
        args = list(step[3:] if ns else step[1:])
        lines.append(" ".join(a for a in args if a != "-6"))
    argv = ["ip", *(["-n", ns] if ns else []), "-batch", "-"]
    result = proc.run(argv, check=False, input="\n".join(lines) + "\n")
    if result.returncode != 0:
        why = result.stderr.split("Command failed")[0].strip()
        failed = _failed_step(steps, result.stderr)
        what = f"`{' '.join(failed)}`" if failed else "ip"
        raise CoveError(f"network: {what} failed: {why}")


def _failed_step(steps: list[Step], stderr: str) -> Step | None:
    """Which step `ip -batch` stopped at: it says the line, except for a bad argument, where
    it exits at once naming only the argument."""
    line = re.search(r"Command failed -:(\d+)", stderr)
    if line and 0 < int(line.group(1)) <= len(steps):
        return steps[int(line.group(1)) - 1]
    for word in re.findall(r'"([^"]+)"', stderr):
        for step in steps:
            if word in step:
                return step
    return None


def namespace_exists(c: Container) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, netnames.namespace(c.name)))


def setup(c: Container, record: Path, nat_interface: str | None = None) -> None:
    """Build the whole network, or nothing: a failed step undoes the ones before it.
    `record` keeps what was moved in from the host, to give it back even if the
    configuration changes while the container runs."""
    steps = net_steps(c)
    if not steps:
        return
    if namespace_exists(c):  # left by a crash: start from nothing
        teardown(c, record)
    _check_host_links(c)
    _check_taken(c, nat_interface)
    tables = [f"inet {TABLE}"] if forwarding(c, nat_interface) else []
    record.write_text(
        json.dumps({"moved": list(c.interfaces), "links": host_links(c), "tables": tables})
    )
    try:
        # Host steps first, then those inside the namespace: nothing on the host waits for
        # the guest's side, and each side is one `ip -batch` instead of a process per step.
        ns = netnames.namespace(c.name)
        _batch(None, [s for s in steps if s[1:3] != ("-n", ns)])
        _batch(ns, [s for s in steps if s[1:3] == ("-n", ns)])
        add_rules(c, nat_interface)
    except BaseException:
        teardown(c, record)
        raise


def _check_host_links(c: Container) -> None:
    """Bridges must exist; the links cove is about to make must not, since teardown deletes
    them by name and must never take a link someone else made."""
    listed = _ip(("ip", "-json", "link", "show"))
    present = {str(link.get("ifname")) for link in json.loads(listed.stdout or "[]")}
    bridges = {net.host_bridge for net, _ in netnames.veths(c) if net.host_bridge}
    for bridge in sorted(bridges - present):
        raise CoveError(
            f"network: host-bridge {bridge} does not exist",
            hint="create the bridge first (ip link add NAME type bridge), or fix the key",
        )
    for link in sorted(set(host_links(c)) & present):
        raise CoveError(
            f"network: host interface {link} already exists, and cove does not take over a "
            "link it did not make",
            hint=f"rename the extra veth, or remove {link} if it is a leftover",
        )


def _check_taken(c: Container, nat_interface: str | None) -> None:
    """What another container already holds on this host, whichever file declared it (a file
    checks its own containers against each other, but not against other files'): a host port
    it forwards, a local address routed to it."""
    if forwarding(c, nat_interface):
        forwarded = forwarded_ports(_nft_text())
        for net, _link in netnames.veths(c):
            for f in net.forward_ports:
                holder = forwarded.get((f.protocol, f.host_port))
                if holder is not None and holder != c.name:
                    raise CoveError(
                        f"network: host port {f.protocol}/{f.host_port} is forwarded to "
                        f"container {holder} already",
                        hint=f"stop {holder} first, or forward another host port",
                    )
    ours = set(host_links(c))
    for family, key in (("-4", "local_address"), ("-6", "local_address6")):
        wanted = [str(getattr(net, key)).split("/")[0] for net, _ in netnames.veths(c)
                  if getattr(net, key) and not net.host_bridge]  # fmt: skip
        if not wanted:
            continue
        routes = json.loads(_ip(("ip", "-json", family, "route", "show")).stdout or "[]")
        for route in routes:
            address, _, prefix = str(route.get("dst", "")).partition("/")
            dev = str(route.get("dev", ""))
            if address in wanted and prefix in ("", "32", "128") and dev not in ours:
                raise CoveError(
                    f"network: local address {address} is routed to {dev} already (another "
                    "container's?)",
                    hint="give this container another local address",
                )


def _nft_text() -> str:
    if proc.find_program("nft") is None:
        return ""
    return proc.run(["nft", "list", "table", "inet", TABLE], check=False).stdout


def forwarded_ports(listing: str) -> dict[tuple[str, int], str]:
    """(protocol, host port) -> container, from `nft list table inet cove`."""
    found: dict[tuple[str, int], str] = {}
    container = None
    for line in listing.splitlines():
        opened = re.match(r"\s*chain fwd-(\S+) \{", line)
        if opened:
            container = opened[1]
        elif line.strip() == "}":
            container = None
        elif container:
            for protocol, port in re.findall(r"\b(tcp|udp) dport (\d+)\b", line):
                found[(protocol, int(port))] = container
    return found


def teardown(c: Container, record: Path) -> None:
    """Give moved interfaces back to this network namespace, then delete the container's
    namespace, which takes its veths (both ends) and macvlans with it."""
    recorded = _read(record)
    # Only a container that made rules looks for them: nft is not run for every stop.
    if recorded.get("tables", [f"inet {TABLE}"] if _may_have_rules(c) else []):
        remove_rules(c)
    moved = recorded.get("moved", list(c.interfaces))
    links = recorded.get("links", host_links(c))
    if namespace_exists(c):
        ns = netnames.namespace(c.name)
        for name in moved:
            _ip(("ip", "-n", ns, "link", "set", name, "down"), check=False)
            _ip(("ip", "-n", ns, "link", "set", name, "netns", str(os.getpid())), check=False)
        # The kernel frees a deleted namespace's veths later, on its own; deleting the host
        # ends now removes both ends before `stop` returns.
        for link in links:
            _ip(("ip", "link", "delete", link), check=False)
        _ip(("ip", "netns", "delete", ns))
    record.unlink(missing_ok=True)


def _may_have_rules(c: Container) -> bool:
    """Without a record of the start: whether the file asks for forwards or NAT."""
    return c.nat or any(net.forward_ports for net, _ in netnames.veths(c))


def host_links(c: Container) -> list[str]:
    """The host ends of the container's veths."""
    return [link for _, link in netnames.veths(c)]


def _read(record: Path) -> dict[str, list[str]]:
    """The record of a start, or {} (the caller falls back to the configuration)."""
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        key: [str(v) for v in value]
        for key, value in data.items()
        if key in ("moved", "links", "tables") and isinstance(value, list)
    }


def _nft(script: str, check: bool = True) -> None:
    result = proc.run(["nft", "-f", "-"], check=False, input=script)
    if check and result.returncode != 0:
        raise CoveError(f"network: nft refused the rules: {result.stderr.strip()}")


def _sysctl(path: str, value: str) -> None:
    try:
        with open(f"/proc/sys/net/{path}", "w") as f:
            f.write(value)
    except OSError as e:
        raise CoveError(f"network: cannot set net/{path}: {e.strerror}") from None


def add_rules(c: Container, nat_interface: str | None) -> None:
    """The container's forwards and NAT, in one nft transaction; IP forwarding is turned on
    (and left on) for the host to pass packets between the container and other hosts."""
    rules = forwarding(c, nat_interface)
    if rules is None:
        return
    remove_rules(c)
    for link in rules.localnet_links:
        _sysctl(f"ipv4/conf/{link}/route_localnet", "1")
    _sysctl("ipv4/ip_forward", "1")
    if rules.v6:
        _sysctl("ipv6/conf/all/forwarding", "1")
    _nft("\n".join(rules.script) + "\n")


def remove_rules(c: Container) -> None:
    """Delete the container's rules and chain; the table goes when nobody uses it."""
    listed = _nft_json()
    if listed is None:
        return
    mine = [
        f"delete rule inet {TABLE} {rule['chain']} handle {rule['handle']}"
        for rule in listed["rules"]
        if rule.get("comment") == c.name
    ]
    if chain(c.name) in listed["chains"]:
        mine.append(f"delete chain inet {TABLE} {chain(c.name)}")
    others = [ch for ch in listed["chains"] if ch.startswith("fwd-") and ch != chain(c.name)]
    others += [r for r in listed["rules"] if r.get("comment") not in (None, c.name)]
    if not others:
        mine = [f"delete table inet {TABLE}"]
    _nft("\n".join(mine) + "\n", check=False)


def _nft_json() -> dict[str, list[Any]] | None:
    result = proc.run(["nft", "-j", "list", "table", "inet", TABLE], check=False)
    if result.returncode != 0:  # no table: nothing of cove's
        return None
    items = json.loads(result.stdout).get("nftables", [])
    return {
        "rules": [i["rule"] for i in items if "rule" in i],
        "chains": [i["chain"]["name"] for i in items if "chain" in i],
    }
