"""The Debian packages the benchmark drives, installed when missing; versions and machine facts."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sysconfig

# Debian package -> the binaries it must provide.
PACKAGES = {
    "wrk": ["wrk"],
    "nginx": ["nginx"],
    "caddy": ["caddy"],
    "pebble": ["pebble", "pebble-challtestsrv"],
    "redis-server": ["redis-server"],
}
_SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def which(binary: str) -> str | None:
    found = shutil.which(binary)
    if found:
        return found
    for folder in _SBIN:  # nginx lives in /usr/sbin, not always on a user's PATH
        path = os.path.join(folder, binary)
        if os.access(path, os.X_OK):
            return path
    return None


def _installed(package: str) -> bool:
    return all(which(b) for b in PACKAGES[package])


def ensure_packages() -> dict[str, str]:
    """Install the missing packages; returns {package: why it is unavailable} for the ones still missing."""
    missing = [p for p in PACKAGES if not _installed(p)]
    if missing and os.environ.get("BENCH_NO_INSTALL"):
        return {p: f"{p} not installed (BENCH_NO_INSTALL set)" for p in missing}
    if missing:
        print(f"installing Debian packages: {' '.join(missing)}", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
        if os.geteuid() != 0 and which("sudo"):
            cmd = ["sudo", "-n", *cmd]
        try:
            ok = subprocess.run(cmd, env=env).returncode == 0
            if not ok:
                update = ["apt-get", "update"] if cmd[0] != "sudo" else ["sudo", "-n", "apt-get", "update"]
                subprocess.run(update, env=env)
                # One at a time, so one unavailable package does not block the others.
                for package in missing:
                    subprocess.run([*cmd[: cmd.index("--no-install-recommends") + 1], package], env=env)
        except OSError as exc:
            print(f"cannot run apt-get: {exc}")
    return {p: f"{p} not installed (apt-get install {p} failed)" for p in missing if not _installed(p)}


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def versions() -> dict[str, str]:
    import snakeway

    found: dict[str, str] = {"python": platform.python_version(), "snakeway": snakeway.__version__}
    try:
        import trio

        found["trio"] = trio.__version__
    except ImportError:
        pass
    try:
        import h11

        compiled = h11._connection.__file__.endswith(str(sysconfig.get_config_var("EXT_SUFFIX")))
        found["h11"] = f"{h11.__version__} ({'compiled' if compiled else 'plain'})"  # make install compiles it
    except ImportError:
        pass
    for name, argv in (
        ("caddy", ["caddy", "version"]),
        ("nginx", ["nginx", "-v"]),
        ("wrk", ["wrk", "-v"]),
        ("pebble", ["dpkg-query", "-W", "-f=${Version}", "pebble"]),
        ("redis-server", ["redis-server", "--version"]),
        ("openssl", ["openssl", "version"]),
    ):
        binary = which(argv[0])
        found[name] = _first_line([binary, *argv[1:]]) if binary else "not installed"
    found["wrk"] = re.sub(r"\s*\[.*", "", found["wrk"]).removeprefix("wrk ")  # "wrk 4.1.0 [epoll] Copyright ..."
    found["nginx"] = found["nginx"].replace("nginx version: ", "").removeprefix("nginx/")
    found["caddy"] = found["caddy"].split()[0] if found["caddy"].strip() else found["caddy"]
    found["redis-server"] = re.sub(r"^Redis server v=(\S+).*", r"\1", found["redis-server"])  # "Redis server v=7.0.15 sha=..."
    found["openssl"] = " ".join(found["openssl"].split()[1:2]) or found["openssl"]  # "OpenSSL 3.0.19 27 Jan ..."
    return found


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: how busy the machine was (other work skews every figure)."""
    try:
        with open("/proc/loadavg") as loadavg:
            return " ".join(loadavg.read().split()[:3])
    except OSError:
        return "unknown"


def machine() -> dict[str, object]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        with open("/proc/meminfo") as meminfo:
            mem_gib = int(meminfo.readline().split()[1]) / 1024 / 1024
    except (OSError, ValueError, IndexError):
        pass
    os_name = ""
    try:
        with open("/etc/os-release") as release:
            for line in release:
                if line.startswith("PRETTY_NAME="):
                    os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "os": os_name,
        # The interpreter, not its path: the results are compared across machines.
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }
