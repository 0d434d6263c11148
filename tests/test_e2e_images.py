"""Recipe images for real: built once by debootstrap into the store (cached on the machine),
then booted."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from cove.recipes import recipe_of
from tests.conftest import CACHE, COVE, Host

pytestmark = pytest.mark.e2e

STORE = f'image-dir = "{CACHE}/images"\n'


def test_two_containers_boot_from_one_debian_image(cove_host: Host) -> None:
    keep, scratch = cove_host.name("keep"), cove_host.name("scratch")
    cove_host.write(
        f"""
        [containers.{keep}]
        image = "debian:bookworm"
        [containers.{scratch}]
        image = "debian:bookworm"
        ephemeral = true
        """,
        host=STORE,
    )
    started = cove_host.cove("start", keep, scratch, timeout=900, check=True)
    assert f"{keep}: started" in started.stdout and f"{scratch}: started" in started.stdout
    for name in (keep, scratch):
        running = cove_host.cove("run", name, "--", "systemctl", "is-system-running")
        assert running.stdout == "running\n", cove_host.log(name)[-2000:]
        failed = cove_host.cove("run", name, "--", "systemctl", "--failed", "--no-legend")
        assert failed.stdout == ""
        release = cove_host.cove("run", name, "--", "cat", "/etc/os-release").stdout
        assert "VERSION_CODENAME=bookworm" in release
    ids = {cove_host.cove("run", n, "--", "cat", "/etc/machine-id").stdout for n in (keep, scratch)}
    assert len(ids) == 2
    debs = cove_host.cove("run", keep, "--", "sh", "-c", "ls /var/cache/apt/archives/*.deb")
    assert debs.returncode != 0, "no cached packages in the image"

    for name in (keep, scratch):
        cove_host.cove("run", name, "--", "sh", "-c", "echo mine > /root/file", check=True)
    cove_host.cove("restart", keep, scratch, check=True)
    assert cove_host.cove("run", keep, "--", "cat", "/root/file").stdout == "mine\n"
    assert cove_host.cove("run", scratch, "--", "cat", "/root/file").returncode == 1
    cove_host.cove("stop", keep, scratch, check=True)

    built = cove_host.cove("image", "build", keep, check=True).stdout
    assert built.startswith("debian:bookworm: ") and f"{CACHE}/images/debian-bookworm-" in built
    listed = json.loads(cove_host.cove("image", "list", "--json", check=True).stdout)
    entry = next(i for i in listed["images"] if i["path"] == built.split(": ", 1)[1].strip())
    assert entry["label"] == "debian:bookworm"
    assert entry["used-by"] == sorted([keep, scratch])
    assert entry["size"] > 50 * 2**20
    table = cove_host.cove("image", "list", check=True).stdout.splitlines()
    assert table[0].split() == ["IDENTITY", "SIZE", "USED", "BY", "LABEL"]


def test_a_killed_build_leaves_no_image_and_the_next_one_succeeds(cove_host: Host) -> None:
    import os
    import signal
    import subprocess
    import time

    from cove import cgroups
    from tests.conftest import COVE

    store = cove_host.root / "images"  # a store of its own: this build must really run
    cove_host.write("", host=f'image-dir = "{store}"\n')
    env = {**os.environ, "COVE_CONFIG": str(cove_host.config)}
    group = cgroups.Group(f"cove-test-{cove_host.tag}")

    def interrupt(how: signal.Signals) -> int:
        build = subprocess.Popen([*COVE, "image", "build", "debian:bookworm"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 120
        while not any(".tmp-" in p.name for p in store.glob(".debian*")):
            assert time.monotonic() < deadline, "the build never started"
            time.sleep(0.2)
        time.sleep(3)  # well into debootstrap
        build.send_signal(how)  # the cove process this test started
        return build.wait()

    # Asked to stop, it undoes the build before it exits: nothing is left at all.
    assert interrupt(signal.SIGTERM) == 143
    assert [p.name for p in store.iterdir() if not p.name.endswith(".lock")] == []
    assert not group.exists(), "its cgroup went with its processes"
    # Killed, it cannot: the next build cleans up after it.
    interrupt(signal.SIGKILL)
    assert not [p for p in store.iterdir() if not p.name.startswith(".")], "no half image"

    done = cove_host.cove("image", "build", "debian:bookworm", timeout=900, check=True)
    image = done.stdout.split(": ", 1)[1].strip()
    assert (store / image.rsplit("/", 1)[1] / "usr/lib/os-release").exists()
    assert not [p for p in store.glob(".*.tmp-*")], "the killed build's tree is gone"
    assert not group.pids(), "and so are its processes"


def _seed(store: Path, identity: str, tree: Path, marker: str) -> None:
    """A store entry as a build would leave it, without running debootstrap."""
    subprocess.run(["cp", "-a", str(tree), str(store / identity)], check=True)
    (store / identity / "etc").mkdir(exist_ok=True)
    (store / identity / "etc/made-from").write_text(marker)


def test_a_persistent_container_keeps_its_image_until_rebased_and_gc_spares_used_images(
    cove_host: Host, busybox_image: Path
) -> None:
    name, other = cove_host.name("pinned"), cove_host.name("loose")
    store = cove_host.root / "images"
    store.mkdir()
    mirror = "http://deb.debian.org/debian"  # the default, which the file keeps
    first = recipe_of("debian:bookworm", ("pkg-one",), {"debian": mirror})
    second = recipe_of("debian:bookworm", ("pkg-two",), {"debian": mirror})
    assert first is not None and second is not None
    _seed(store, first.identity, busybox_image, "first\n")
    _seed(store, second.identity, busybox_image, "second\n")
    _seed(store, "debian-bookworm-0123456789abcdef", busybox_image, "unused\n")

    def declare(packages: str) -> None:
        cove_host.write(
            f"""
            [containers.{name}]
            image = "debian:bookworm"
            packages = {packages}
            boot = false
            command = ["/bin/sh", "-c", "exec sleep 1000"]
            [containers.{other}]
            image = "{busybox_image}"
            boot = false
            command = ["/bin/sh", "-c", "exec sleep 1000"]
            """,
            host=f'image-dir = "{store}"\n',
        )

    def made_from() -> str:
        return cove_host.cove("run", name, "--", "cat", "/etc/made-from", check=True).stdout

    declare('["pkg-one"]')
    cove_host.cove("start", name, check=True)
    assert made_from() == "first\n"
    cove_host.cove("run", name, "--", "sh", "-c", "echo mine > /root/file", check=True)
    cove_host.cove("stop", name, check=True)

    declare('["pkg-two"]')  # the file now names another image
    started = cove_host.cove("start", name, check=True)
    assert f"{name} keeps image {first.identity} it was created from" in started.stderr
    assert made_from() == "first\n"
    # Started from the file as it is: a plan restarts nothing (the image it keeps is no
    # setting; only `cove image rebase` moves it).
    planned = json.loads(cove_host.cove("plan", "--json", check=True).stdout)["actions"]
    assert [a["action"] for a in planned if a["name"] == name] == ["create"]
    assert cove_host.cove("image", "rm", first.identity).returncode == 1  # in use
    missing = cove_host.cove("image", "rm", "debian-bookworm-ffffffffffffffff")
    assert missing.returncode == 3, missing.stderr  # not found
    assert cove_host.cove("image", "rebase", name).returncode == 1  # running
    # gc while it runs: the image it was created from and the one the file names both stay.
    gc = cove_host.cove("image", "gc", check=True)
    assert gc.stdout == "debian-bookworm-0123456789abcdef: removed\n"
    assert {p.name for p in store.iterdir() if not p.name.startswith(".")} == {
        first.identity,
        second.identity,
    }
    cove_host.cove("stop", name, check=True)

    rebased = cove_host.cove("image", "rebase", name, check=True)
    assert rebased.stdout == (
        f"{name}: image {first.identity} -> {second.identity}; its changes are kept on top\n"
    )
    cove_host.cove("start", name, check=True)
    assert made_from() == "second\n"
    assert cove_host.cove("run", name, "--", "cat", "/root/file").stdout == "mine\n"
    listed = json.loads(cove_host.cove("image", "list", "--json", check=True).stdout)
    used = {i["identity"]: i["used-by"] for i in listed["images"]}
    assert used == {first.identity: [], second.identity: [name]}
    cove_host.cove("stop", name, check=True)

    removed = cove_host.cove("image", "rm", first.identity, check=True)
    assert removed.stdout == f"{first.identity}: removed\n"
    assert not (store / first.identity).exists()
    left = sorted(p.name for p in store.iterdir() if not p.name.endswith(".lock"))
    assert left == [".users", second.identity]  # no half-removed tree either
    assert [p.name for p in (store / ".users").iterdir()] == [second.identity]
    missing = cove_host.cove("image", "rm", "../etc")
    assert missing.returncode == 1 and "is not an image identity" in missing.stderr


def _bookworm_tarball(cove_host: Host) -> Path:
    """debian:bookworm as a root file system archive, as `tar --numeric-owner` makes one from
    a debootstrap tree; kept on the machine beside the image it was made from."""
    cove_host.write("", host=STORE)
    built = cove_host.cove("image", "build", "debian:bookworm", timeout=900, check=True)
    tree = Path(built.stdout.split(": ", 1)[1].strip())
    tarball = CACHE / f"{tree.name}.tar.zst"
    if not tarball.exists():
        partial = tarball.with_name(f".{tarball.name}.{os.getpid()}")
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(tree), "--zstd", "-cf",
             str(partial), "."],
            check=True,
        )  # fmt: skip
        partial.rename(tarball)
    return tarball


def test_a_rootfs_tarball_imports_once_and_boots(cove_host: Host) -> None:
    tarball = _bookworm_tarball(cove_host)
    name, twin = cove_host.name("tar"), cove_host.name("tar2")
    store = cove_host.root / "images"
    cove_host.write(
        f"""
        [containers.{name}]
        image = "{tarball}"
        [containers.{twin}]
        image = "{tarball}"
        ephemeral = true
        """,
        host=f'image-dir = "{store}"\n',
    )
    started = cove_host.cove("start", name, twin, timeout=300, check=True)
    assert started.stderr.count(f"importing {tarball} as image tar-") == 1
    for n in (name, twin):
        running = cove_host.cove("run", n, "--", "systemctl", "is-system-running")
        assert running.stdout == "running\n", cove_host.log(n)[-2000:]
    localtime = cove_host.cove("run", name, "--", "readlink", "/etc/localtime").stdout
    assert localtime.startswith("/usr/share/zoneinfo/")  # an absolute link, kept as it was
    owners = cove_host.cove("run", name, "--", "stat", "-c", "%u:%g %a", "/usr/bin/passwd")
    assert owners.stdout == "0:0 4755\n"
    cove_host.cove("stop", name, twin, check=True)
    (image,) = [p for p in store.iterdir() if p.name.startswith("tar-")]
    assert not (image / "dev/null").exists()  # nspawn provides /dev
    listed = json.loads(cove_host.cove("image", "list", "--json", check=True).stdout)
    (entry,) = [i for i in listed["images"] if i["identity"] == image.name]
    assert entry["label"] == f"archive {tarball}"
    assert entry["used-by"] == sorted([name, twin])
    again = cove_host.cove("start", name, check=True)  # identity remembered: no new import
    assert "importing" not in again.stderr
    cove_host.cove("stop", name, check=True)


def test_a_tarball_escaping_its_root_is_refused_and_nothing_is_written(
    cove_host: Host, busybox_image: Path
) -> None:
    evil = cove_host.root / "evil.tar"
    outside = cove_host.root / "outside"
    outside.mkdir()
    with tarfile.open(evil, "w") as tar:
        tar.add(busybox_image, arcname=".")
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, str(outside)
        tar.addfile(link)
        data = b"owned\n"
        through = tarfile.TarInfo("link/etc-x")
        through.size = len(data)
        tar.addfile(through, io.BytesIO(data))
    name = cove_host.name("evil")
    store = cove_host.root / "images"
    cove_host.write(
        f"""
        [containers.{name}]
        image = "{evil}"
        boot = false
        command = ["/bin/true"]
        """,
        host=f'image-dir = "{store}"\n',
    )
    before = cove_host.snapshot()
    result = cove_host.cove("start", name)
    assert result.returncode == 1
    assert "link/etc-x" in result.stderr and str(evil) in result.stderr
    assert list(outside.iterdir()) == []
    assert [p.name for p in store.iterdir() if not p.name.endswith(".lock")] == []
    assert cove_host.snapshot() == before


def test_two_concurrent_requests_for_one_image_import_it_once(
    cove_host: Host, busybox_image: Path
) -> None:
    archive = cove_host.root / "busybox.tar.gz"
    subprocess.run(
        ["tar", "--numeric-owner", "-C", str(busybox_image), "-czf", str(archive), "."],
        check=True,
    )
    store = cove_host.root / "images"
    cove_host.write("", host=f'image-dir = "{store}"\n')
    env = {**os.environ, "COVE_CONFIG": str(cove_host.config)}
    requests = [
        subprocess.Popen(
            [*COVE, "image", "build", str(archive)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [r.communicate(timeout=120) for r in requests]
    assert [r.returncode for r in requests] == [0, 0, 0, 0], outputs
    assert sum(err.count("importing") for _, err in outputs) == 1
    assert len({out for out, _ in outputs}) == 1  # all name the same image
    entries = [p.name for p in store.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and entries[0].startswith("tar-")
    assert not [p for p in store.iterdir() if ".tmp-" in p.name]


def test_gc_spares_images_that_containers_of_another_file_use(
    cove_host: Host, busybox_image: Path
) -> None:
    store = cove_host.root / "images"
    store.mkdir()
    mirror = "http://deb.debian.org/debian"
    kept, running, unused = (
        recipe_of("debian:bookworm", (package,), {"debian": mirror})
        for package in ("pkg-kept", "pkg-running", "pkg-unused")
    )
    assert kept is not None and running is not None and unused is not None
    for recipe in (kept, running, unused):
        _seed(store, recipe.identity, busybox_image, recipe.label)
    persistent, ephemeral = cove_host.name("made"), cove_host.name("live")
    sleeper = 'boot = false\ncommand = ["/bin/sh", "-c", "exec sleep 1000"]'
    cove_host.write(
        f"""
        [containers.{persistent}]
        image = "debian:bookworm"
        packages = ["pkg-kept"]
        {sleeper}
        [containers.{ephemeral}]
        image = "debian:bookworm"
        packages = ["pkg-running"]
        ephemeral = true
        {sleeper}
        """,
        host=f'image-dir = "{store}"\n',
    )
    cove_host.cove("start", persistent, ephemeral, check=True)
    cove_host.cove("stop", persistent, check=True)
    # Another file shares the store and declares nothing; it has its own state and runtime.
    other = cove_host.root / "other"
    other.mkdir()
    base = cove_host.config.read_text().split("[containers.")[0]
    for key in ("state", "run", "log", "etc", "hosts"):
        base = base.replace(f'"{cove_host.root}/{key}', f'"{other}/{key}')
    assert f'image-dir = "{store}"' in base
    (other / "cove.toml").write_text(base)
    env = {**os.environ, "COVE_CONFIG": str(other / "cove.toml")}

    def other_gc() -> str:
        return subprocess.run(
            [*COVE, "image", "gc"], capture_output=True, text=True, env=env, check=True
        ).stdout

    assert other_gc() == f"{unused.identity}: removed\n"
    cove_host.write(  # the persistent one dropped: what it was created from is kept until...
        f"""
        [containers.{ephemeral}]
        image = "debian:bookworm"
        packages = ["pkg-running"]
        ephemeral = true
        {sleeper}
        """,
        host=f'image-dir = "{store}"\n',
    )
    assert other_gc() == ""
    cove_host.cove("destroy", persistent, check=True)  # ...its data goes
    assert other_gc() == f"{kept.identity}: removed\n"
    cove_host.cove("stop", ephemeral, check=True)
    assert other_gc() == f"{running.identity}: removed\n"
    assert not [p for p in store.iterdir() if p.name not in (".users",)]
