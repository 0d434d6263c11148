"""The host image's generated root: what it is made of, and its identity. Only `os` and
`stat` at import: the launch-first start (quickstart) checks the identity before the rest of
cove is loaded."""

from __future__ import annotations

import os
import stat

# Files of the host's /etc that a guest sharing the host's /usr needs to work like the host:
# accounts, name service, PAM, the dynamic linker cache, command alternatives, time zone.
HOST_ETC = (
    "passwd",
    "group",
    "nsswitch.conf",
    "pam.d",
    "pam.conf",
    "security",
    "login.defs",
    "profile",
    "profile.d",
    "bash.bashrc",
    "environment",
    "default",
    "ld.so.conf",
    "ld.so.conf.d",
    "ld.so.cache",
    "alternatives",
    "localtime",
    "timezone",
    "shells",
    "inputrc",
    "locale.gen",
    "locale.alias",
    "terminfo",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "mime.types",
    "services",
    "protocols",
    "rpc",
    "ethertypes",
    "networks",
    "host.conf",
    "gai.conf",
    "adduser.conf",
    "deluser.conf",
    "skel",
    "subuid",
    "subgid",
)
MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


HOST_BASE_VERSION = 2  # bump when the generated tree changes shape


def host_base_key() -> str:
    """Identity of the generated host root: everything it is made of, read by lstat only, so
    an edit of any copied /etc file (or a package changing /etc/alternatives) makes a new one."""
    import hashlib

    digest = hashlib.sha256(f"cove host base {HOST_BASE_VERSION}\n".encode())

    def add(path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
        line = f"{path}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_uid}\0{target}\n"
        digest.update(line.encode(errors="surrogateescape"))
        if stat.S_ISDIR(st.st_mode):
            with os.scandir(path) as entries:
                for name in sorted(e.name for e in entries):
                    add(os.path.join(path, name))

    for link in MERGED_USR:
        add(f"/{link}")
    for entry in HOST_ETC:
        add(f"/etc/{entry}")
    return digest.hexdigest()[:16]


def write_container_layer(layer: str | os.PathLike[str], name: str) -> None:
    """What differs between containers on the host image, laid over the shared root."""
    etc = os.path.join(layer, "etc")
    os.makedirs(etc, mode=0o755, exist_ok=True)
    files = {
        "hostname": f"{name}\n",
        "hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"127.0.1.1\t{name}\n",
    }
    for file, text in files.items():
        path = os.path.join(etc, file)
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
        )
        with os.fdopen(fd, "w") as f:
            f.write(text)
