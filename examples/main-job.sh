#!/bin/bash
# The main job (run by scripts/main-job, which installs cove first): boot real system
# containers from main-job.toml beside this file, look inside, show that an ephemeral
# container forgets, stop everything and show that nothing is left on the host.
# Uses $COVE as the cove command, else the project's .venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export COVE_CONFIG="$here/main-job.toml"
cove_bin="${COVE:-$here/../.venv/bin/cove}"
cove() { "$cove_bin" "$@"; }
state=/var/lib/cove-main-job
runtime=/run/cove-main-job
group=cove-main-job

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi

# Print a command as one would type it, then run it.
show() {
    local line="" arg
    for arg in "$@"; do
        if [[ "$arg" =~ ^[A-Za-z0-9_./=:+-]+$ ]]; then line+=" $arg"; else line+=" ${arg@Q}"; fi
    done
    printf '\n%s$%s%s\n' "$bold" "$line" "$plain"
    "$@" 2>&1
}

stop_all() { cove stop hello scratch >/dev/null 2>&1 || true; }
trap stop_all EXIT

show cove start hello scratch
show cove status hello
show cove list
show cove run hello -- cat /etc/os-release
show cove run hello -- systemctl is-system-running
show cove run hello -- systemctl --failed --no-legend

show cove run scratch -- sh -c 'echo "written at $(date +%T)" > /root/note; cat /root/note'
show cove restart scratch
echo "(the file is gone after the restart: cat must fail)"
if show cove run scratch -- cat /root/note; then
    echo "main job: FAILED: the ephemeral container kept /root/note" >&2
    exit 1
fi

show cove stop hello scratch
show cove list

leftovers() {
    grep -F -e "$state" -e "$runtime" /proc/self/mountinfo || true
    find "$runtime" -mindepth 1 2>/dev/null || true
    find /sys/fs/cgroup -maxdepth 2 -name "$group" 2>/dev/null || true
    find "$state/containers" -mindepth 1 -maxdepth 1 ! -name hello 2>/dev/null || true
    find /run/systemd/nspawn/propagate -mindepth 1 -maxdepth 1 \( -name hello -o -name scratch \) \
        2>/dev/null || true
}
printf '\n%s# left on the host: mounts, runtime files, cgroups, ephemeral data%s\n' "$bold" "$plain"
left=$(leftovers)
if [ -n "$left" ]; then
    printf '%s\n' "$left"
    echo "main job: FAILED: traces left behind" >&2
    exit 1
fi
echo "nothing. The persistent container keeps its data in $state/containers/hello."
trap - EXIT
echo
echo "main job: OK"
