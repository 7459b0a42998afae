"""Network guard for the mirror test's offline phase: loaded by every Python process started with
this directory on PYTHONPATH (Snakemake, its jobs, langprune). Any attempt to open an internet
socket connection (IPv4 or IPv6, any address) is appended to ``$LANGPRUNE_NET_GUARD_LOG`` with the
process's command line, and refused; local (unix) sockets, which SLURM and Snakemake's own
machinery use, pass. Each guarded process also appends its command line to ``<log>.loaded``, so a
test can tell the guard was in place where it mattered.
"""

import os
import socket
import sys

_LOG = os.environ.get("LANGPRUNE_NET_GUARD_LOG")
_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def _record(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        with open(_LOG, "a", encoding="utf-8") as log:
            log.write(f"{os.getpid()} {' '.join(sys.argv)[:200]} -> {address!r}\n")
        raise ConnectionRefusedError(f"network guard: connection to {address!r} after the prefetch")


def _guarded_connect(self, address):
    _record(self, address)
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    _record(self, address)
    return _connect_ex(self, address)


if _LOG:
    socket.socket.connect, socket.socket.connect_ex = _guarded_connect, _guarded_connect_ex
    with open(f"{_LOG}.loaded", "a", encoding="utf-8") as loaded:
        loaded.write(" ".join(sys.argv)[:300] + "\n")
