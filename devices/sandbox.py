"""A cell's own view of the host, entered by the launcher as root before it becomes the cell's user: new mount,
IPC and (unless the run allows network) network namespaces.

- /tmp and /var/tmp: an overlay whose lower layer is the host's directory (the cell reads what its permissions
  allow there, a task file under /tmp included) and whose upper layer is the cell's own, under the directory the
  harness gave it (ENV_SANDBOX): what the cell writes or deletes there never reaches the host or another cell,
  and goes when the harness removes that directory after the cell.
- /dev/shm: a fresh tmpfs (memory, charged to the cell's cgroup), gone with the cell's last process.
- SysV IPC: a fresh namespace, gone with the cell.
- network: a namespace with only a loopback, up, of its own: no route out and no host service at 127.0.0.1.

Mounts are made private first, so that nothing propagates back to the host's namespace.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

#: The directory (root's, outside /tmp and /var/tmp) that holds the cell's upper layers; unset: no sandbox.
ENV_SANDBOX = "EDGEBENCH_SANDBOX"
#: Set to "1" when the spec and the operator both allow the cell the host's network.
ENV_HOST_NETWORK = "EDGEBENCH_HOST_NETWORK"
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWNET = 0x00020000, 0x08000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x1000, 0x4000, 0x40000
OVERLAID = {"/tmp": "tmp", "/var/tmp": "var-tmp"}
SHM = "/dev/shm"
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
_IFREQ = struct.Struct("16sh14x")  # struct ifreq: the interface's name, then its flags


def libc_call(name: str, *args: object) -> None:
    """Call a libc function that returns 0 on success, raising OSError with errno otherwise."""
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}: {os.strerror(errno)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encoded = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    libc_call("mount", encoded[0], encoded[1], encoded[2], ctypes.c_ulong(flags), encoded[3])


def enter_from_env() -> None:
    """Enter the sandbox the harness asked for in the environment (nothing when it asked for none)."""
    layers = os.environ.pop(ENV_SANDBOX, None)
    network = os.environ.pop(ENV_HOST_NETWORK, "") == "1"
    if layers:
        enter(layers, network)


def enter(layers: str, network: bool) -> None:
    libc_call("unshare", CLONE_NEWNS | CLONE_NEWIPC | (0 if network else CLONE_NEWNET))
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    for target, name in OVERLAID.items():
        if os.path.isdir(target):
            overlay(target, os.path.join(layers, name))
    if os.path.isdir(SHM):
        mount("tmpfs", SHM, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    if not network:
        loopback_up()


def overlay(target: str, layer: str) -> None:
    """Mount over `target` an overlay of itself and a new upper layer in `layer`, whose root has target's mode and
    owner (the merged directory takes them from it: /tmp stays 1777 and sticky)."""
    upper, work = os.path.join(layer, "upper"), os.path.join(layer, "work")
    os.makedirs(upper, mode=0o700)
    os.mkdir(work, 0o700)
    info = os.stat(target)
    os.chown(upper, info.st_uid, info.st_gid)
    os.chmod(upper, info.st_mode & 0o7777)
    mount("overlay", target, "overlay", MS_NOSUID | MS_NODEV, f"lowerdir={target},upperdir={upper},workdir={work}")


def loopback_up() -> None:
    """Bring up the new network namespace's loopback (a namespace starts with it down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = _IFREQ.unpack(fcntl.ioctl(sock, SIOCGIFFLAGS, _IFREQ.pack(b"lo", 0)))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | IFF_UP))
