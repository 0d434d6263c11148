"""cove.toml text → frozen model, with every problem reported at once (DESIGN §2)."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import replace

from cove.errors import ConfigError, Diagnostic, UsageError
from cove.model import Config, Container, HostConfig
from cove.netsettings import check_across, check_network
from cove.parsing import Diagnostics, key_path, parse_table
from cove.quickstart import file_stamp
from cove.recipes import parse_recipe
from cove.settings import CONTAINER_SETTINGS, HOST_SETTINGS

DEFAULT_CONFIG = "/etc/cove/cove.toml"
MAX_NAME = 64
MAX_FILE = 16 * 2**20  # far above 10,000 containers; a bigger file is a mistake
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def config_path(option: str | None, environ: dict[str, str] | os._Environ[str]) -> str:
    """`--config` wins over `COVE_CONFIG`, which wins over the host file. Absolute: units and
    the hosts file name the file, and must find it from anywhere."""
    return os.path.abspath(option or environ.get("COVE_CONFIG") or DEFAULT_CONFIG)


def load_config(path: str) -> Config:
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size > MAX_FILE:
                raise UsageError(
                    f"{path} is {st.st_size // 2**20} MiB; cove reads config files of at most "
                    f"{MAX_FILE // 2**20} MiB",
                    hint="is this the right file?",
                )
            data = f.read(MAX_FILE + 1)
            stamp = file_stamp(st)
    except FileNotFoundError:
        raise UsageError(
            f"{path}: no such config file",
            hint="create it, or point --config / COVE_CONFIG at your cove.toml",
        ) from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror}") from None
    return with_imperative(replace(parse_config(data, path), data=data, stamp=stamp))


def imperative_dir(host: HostConfig) -> str:
    """Where `cove create` writes containers, one file each (DESIGN §1)."""
    return os.path.join(host.config_dir, "containers")


def imperative_path(host: HostConfig, name: str) -> str:
    return os.path.join(imperative_dir(host), f"{name}.toml")


def with_imperative(config: Config) -> Config:
    """The file's containers and the imperative ones (config-dir/containers/NAME.toml), all
    problems of all files reported at once."""
    directory = imperative_dir(config.host)
    try:
        files = sorted(f for f in os.listdir(directory) if f.endswith(".toml"))
    except (FileNotFoundError, NotADirectoryError):
        return config
    problems: list[Diagnostic] = []
    containers = dict(config.containers)
    for filename in files:
        path = os.path.join(directory, filename)
        try:
            with open(path, "rb") as f:
                c = parse_imperative(f.read(), path)
        except ConfigError as e:
            problems += e.diagnostics
            continue
        except OSError as e:
            problems.append(Diagnostic(path, "", f"cannot read: {e.strerror}"))
            continue
        if c.name in containers:
            problems.append(Diagnostic(path, key_path("containers", c.name),
                                       f"already declared in {config.path}"))  # fmt: skip
            continue
        containers[c.name] = c
    if len(containers) > len(config.containers):
        diag = Diagnostics(f"{config.path} with {directory}")
        check_across(containers, diag)
        problems += diag.items
    if problems:
        raise ConfigError(problems)
    return replace(config, containers=containers)


def parse_imperative(data: bytes, file: str) -> Container:
    """One imperative container: a file NAME.toml holding [containers.NAME] and nothing else."""
    name = os.path.basename(file).removesuffix(".toml")
    parsed = parse_config(data, file)
    document = tomllib.loads(data.decode("utf-8"))
    extra = sorted(set(document) - {"containers"}) + sorted(set(parsed.containers) - {name})
    if extra or name not in parsed.containers:
        raise ConfigError([Diagnostic(file, "", f"expected only [containers.{name}] in the "
                                      f"file of imperative container {name}")])  # fmt: skip
    return parsed.containers[name]


def parse_config(data: bytes, file: str) -> Config:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([Diagnostic(file, "", f"not UTF-8 (byte {e.start})")]) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([Diagnostic(file, "", f"invalid TOML: {e}")]) from None
    diag = Diagnostics(file)
    for key in sorted(set(document) - {"host", "containers"}):
        diag.error(key_path(key), "unknown table; expected [host] or [containers.NAME]")
    host = _parse_host(document.get("host", {}), diag)
    containers = _parse_containers(document.get("containers", {}), file, diag)
    for c in containers.values():
        if c.nat and host.nat_interface is None:
            diag.error(f"{key_path('containers', c.name)}.nat", "needs nat-interface in [host]: "
                       "the uplink to masquerade through")  # fmt: skip
    if diag.items:
        raise ConfigError(diag.items)
    return Config(path=file, host=host, containers=containers)


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a container, or None when it can."""
    if not name:
        return "a container name cannot be empty"
    if len(name) > MAX_NAME:
        return f"a container name has at most {MAX_NAME} characters, this one has {len(name)}"
    if "_" in name:
        return "'_' is not allowed in a container name (machined rejects it); use '-' instead"
    if not _NAME.match(name):
        return "a container name uses only a-z, 0-9 and '-', and starts with a letter or digit"
    return None


def _parse_host(table: object, diag: Diagnostics) -> HostConfig:
    if not isinstance(table, dict):
        diag.error("host", "expected a table [host]")
        return HostConfig()
    values = parse_table(table, HOST_SETTINGS, "host", diag)
    return HostConfig(**values) if values is not None else HostConfig()


def _parse_containers(tables: object, file: str, diag: Diagnostics) -> dict[str, Container]:
    if not isinstance(tables, dict):
        diag.error("containers", "expected tables [containers.NAME]")
        return {}
    containers: dict[str, Container] = {}
    for name, table in tables.items():
        path = key_path("containers", name)
        problem = name_problem(name)
        if problem:
            diag.error(path, problem)
        if not isinstance(table, dict):
            diag.error(path, "expected a table of container settings")
            continue
        values = parse_table(table, CONTAINER_SETTINGS, path, diag)
        if values is None or problem:
            continue
        container = Container(name=name, source=file, **values)
        if _check_container(container, path, diag):
            containers[name] = container
    check_across(containers, diag)
    return containers


def _check_container(c: Container, path: str, diag: Diagnostics) -> bool:
    before = len(diag.items)
    if c.packages and parse_recipe(c.image) is None:
        diag.error(f"{path}.packages", "packages go into recipe images (debian:SUITE, "
                   f"ubuntu:SUITE); image {c.image!r} is not one")  # fmt: skip
    if not c.boot and not c.command:
        diag.error(f"{path}.command", "boot = false needs a command to run")
    if c.boot and c.command:
        diag.error(f"{path}.command", "a command is only run with boot = false")
    check_network(c, path, diag)
    for target, _ in c.files if c.host_image else ():
        if target.startswith("/usr/"):
            message = "the host image's /usr is the host's own, read-only; write the file "
            diag.error(f"{path}.files.{key_path(target)}", message + "elsewhere")
    seen: set[str] = set()
    for mount in c.bind_mounts:
        if mount.mount_point in seen:
            diag.error(f"{path}.bind-mounts", f"{mount.mount_point} is mounted twice")
        seen.add(mount.mount_point)
    return len(diag.items) == before
