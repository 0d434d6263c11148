"""cove destroy on real containers: state and logs go, nothing under a mount point ever does."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Host, ip_json
from tests.test_e2e_busybox import app

pytestmark = pytest.mark.e2e


def test_destroy_running_container_keeps_the_bound_host_directory(
    cove_host: Host, busybox_image: Path
) -> None:
    data = cove_host.root / "host-data"
    data.mkdir()
    (data / "marker").write_text("precious\n")
    name = cove_host.name("bound")
    cove_host.write(
        app(
            cove_host,
            "bound",
            busybox_image,
            extra=f"""
            [containers.{name}.bind-mounts."/srv/data"]
            host-path = "{data}"
            is-read-only = false
            """,
        )
    )
    cove_host.cove("start", name, check=True)
    cove_host.cove("run", name, "--", "sh", "-c", "echo mine > /root/file", check=True)
    state = Path(cove_host.host.container_state(name))
    assert (state / "upper/root/file").exists()
    # A file the guest's admin made immutable: destroy removes it all the same.
    subprocess.run(["chattr", "+i", str(state / "upper/root/file")], check=True)

    refused = cove_host.cove("destroy", name)
    assert refused.returncode == 1
    assert f"cannot destroy {name}: it is declared in {cove_host.config}" in refused.stderr
    assert state.exists()  # nothing done
    cove_host.write("")  # dropped from the file: destroy may take it, running as it is
    result = cove_host.cove("destroy", name, check=True)
    assert result.stdout == f"{name}: destroyed\n"
    assert (data / "marker").read_text() == "precious\n"
    assert not state.exists()
    assert not (cove_host.root / "log" / name).exists()
    assert cove_host.cove("status", name).stdout == "gone\n"
    assert cove_host.cove("destroy", name).returncode == 3  # nothing left of it


def test_destroy_refuses_a_state_dir_with_a_mount_in_it(
    cove_host: Host, busybox_image: Path
) -> None:
    name = cove_host.name("mounted")
    cove_host.write(app(cove_host, "mounted", busybox_image))
    cove_host.cove("start", name, check=True)
    cove_host.cove("run", name, "--", "sh", "-c", "mkdir -p /srv/in && echo x > /etc/mine")
    cove_host.cove("stop", name, check=True)
    cove_host.write("")  # dropped from the file
    # Someone bound a host directory (same file system) into the container's upper layer.
    data = cove_host.root / "host-data"
    data.mkdir()
    (data / "marker").write_text("precious\n")
    state = Path(cove_host.host.container_state(name))
    target = state / "upper/srv/in"
    subprocess.run(["mount", "--bind", str(data), str(target)], check=True)
    try:
        result = cove_host.cove("destroy", name)
        assert result.returncode == 1, result.stderr
        assert f"cannot destroy {name}: refusing to remove" in result.stderr
        assert f"a file system is mounted at {target}" in result.stderr
        assert (data / "marker").read_text() == "precious\n"
        assert (state / "upper/etc/mine").exists()  # nothing removed at all
    finally:
        subprocess.run(["umount", str(target)], check=True)
    assert cove_host.cove("destroy", name, check=True).stdout == f"{name}: destroyed\n"
    assert (data / "marker").read_text() == "precious\n"
    assert not state.exists()


def test_destroy_reaches_the_data_of_a_container_the_file_dropped(
    cove_host: Host, busybox_image: Path
) -> None:
    name = cove_host.name("old")
    cove_host.write(app(cove_host, "old", busybox_image))
    cove_host.cove("start", name, check=True)
    cove_host.cove("stop", name, check=True)
    state = Path(cove_host.host.container_state(name))
    assert state.exists()
    cove_host.write("")
    assert cove_host.cove("destroy", name, check=True).stdout == f"{name}: destroyed\n"
    assert not state.exists()
    assert cove_host.cove("destroy", name).returncode == 3  # nothing left: not found


def test_destroy_of_a_container_with_its_own_mounts_inside_touches_nothing_outside(
    cove_host: Host, busybox_image: Path
) -> None:
    """Its guest mounted things of its own (as a nested container does): a host directory
    bound in, bound again elsewhere, and a tmpfs. Destroy removes its state, and nothing the
    inner mounts reached on the host."""
    data = cove_host.root / "host-data"
    data.mkdir()
    (data / "marker").write_text("precious\n")
    name = cove_host.name("nested")
    cove_host.write(app(cove_host, "nested", busybox_image, extra=f"""
        [containers.{name}.bind-mounts."/data"]
        host-path = "{data}"
        is-read-only = false
        """))  # fmt: skip
    cove_host.cove("start", name, check=True)
    inner = "mkdir -p /inner /scratch && mount --bind /data /inner && mount -t tmpfs none " \
            "/scratch && echo x > /scratch/f && ls /inner/marker"  # fmt: skip
    assert cove_host.cove("run", name, "--", "sh", "-c", inner).returncode == 0
    state = Path(cove_host.host.container_state(name))
    cove_host.write("")  # dropped from the file, still running with its mounts
    assert cove_host.cove("destroy", name, check=True).stdout == f"{name}: destroyed\n"
    assert not state.exists()
    assert (data / "marker").read_text() == "precious\n"
    assert sorted(p.name for p in data.iterdir()) == ["marker"]


def test_a_renamed_container_leaves_nothing_under_its_old_name(
    net_host: Host, busybox_image: Path
) -> None:
    assert net_host.netns

    def declared(name: str) -> str:
        return app(net_host, name, busybox_image, extra="""
            ephemeral = true
            auto-start = true
            private-network = true
            host-address = "10.91.0.1"
            local-address = "10.91.0.2"
            """)  # fmt: skip

    old, new = net_host.name("old"), net_host.name("new")
    net_host.write(declared("old"))
    net_host.cove("apply", check=True)
    net_host.write(declared("new"))
    done = net_host.cove("apply", check=True).stdout
    assert f"{old}: stopped\n{old}: removed\n" in done and f"{new}: started\n" in done
    links = [str(link["ifname"]) for link in ip_json(net_host.netns, "link")]
    assert not any(old[:8] in link for link in links), links
    assert not (net_host.root / "run" / old).exists()
    assert f"cove-{old}" not in os.listdir("/run/netns")
    assert net_host.cove("status", old).stdout == "gone\n"
    assert net_host.cove("status", new).stdout == "up\n"
