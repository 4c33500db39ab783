"""CPU time and memory of a whole process tree, read from /proc (Linux only).

CPU is ``utime + stime`` of every live process in the tree (all threads included),
plus the root's ``cutime + cstime`` (children it has already reaped), in seconds.
Memory is the sum over the tree of ``VmRSS`` (now) and ``VmHWM`` (each process's
peak resident set), in MiB.
"""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(")") + 2:].split()


def tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        st = _stat(int(entry.name))
        if st is not None:
            children.setdefault(int(st[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_times(root: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the whole tree."""
    user = system = 0
    for pid in tree(root):
        st = _stat(pid)
        if st is None:
            continue
        # after the comm split: [0]=state, [1]=ppid, ..., [11]=utime, [12]=stime, [13]=cutime, [14]=cstime
        user += int(st[11])
        system += int(st[12])
        if pid == root:
            user += int(st[13])
            system += int(st[14])
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(root: int) -> float:
    return sum(cpu_times(root))


def memory_mb(root: int) -> dict[str, float]:
    """{"rss_mb": sum of VmRSS, "hwm_mb": sum of VmHWM, "processes": n} over the tree."""
    rss = hwm = 0
    pids = tree(root)
    for pid in pids:
        try:
            text = (PROC / str(pid) / "status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm += int(line.split()[1])
    return {"rss_mb": rss / 1024, "hwm_mb": hwm / 1024, "processes": len(pids)}


def pid_listening_on(port: int) -> int | None:
    """The oldest process holding a listening TCP socket on ``port`` (needs /proc access)."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f[9])
    if not inodes:
        return None
    holders: list[int] = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    holders.append(int(entry.name))
                    break
        except OSError:
            continue
    if not holders:
        return None
    # A pre-fork server shares the socket among its workers: measure from the parent.
    parents = {p for p in holders if (_stat(p) or ["", "0"])[1] not in {str(h) for h in holders}}
    return min(parents or holders)


def system_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine (all CPUs), from /proc/stat."""
    v = [int(x) for x in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(v) - v[3] - v[4]) / CLK_TCK  # minus idle and iowait


def cpu_model() -> str:
    try:
        for line in (PROC / "cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
