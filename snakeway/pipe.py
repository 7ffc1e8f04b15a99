"""A kernel pipe for ``splice(2)``: the middle of :meth:`snakeway.tcp.TcpStream.send_spliced`."""

from __future__ import annotations

import fcntl
import os
from typing import final

# What a pipe made for splicing is asked to hold (its default is 64 KiB): fewer rounds per body. A 1 MiB
# proxied body took 1.56 million instructions with 64 KiB, 1.12 with 256 KiB and 0.99 with 1 MiB; pipe
# pages count against the user's allowance (fs.pipe-user-pages-soft, 64 MiB by default, past which every
# new pipe of the user is small), so 256 KiB: 256 upstream connections' worth.
PIPE_SIZE = 256 * 1024
_SETPIPE_SZ: int | None = getattr(fcntl, "F_SETPIPE_SZ", None)


@final
class Pipe:
    """A kernel pipe for :meth:`TcpStream.send_spliced`: made at its first use, closed by its owner.

    Resource handling:
      Two descriptors once used, none before; :meth:`close` releases them
      and the next use makes a new pipe. ``send_spliced`` leaves the pipe
      empty when it returns, and closes it when it raises (bytes may be
      left in it then), so an open pipe never holds a byte between two calls.
    """

    __slots__ = ("read_fd", "write_fd")

    def __init__(self) -> None:
        self.read_fd = self.write_fd = -1

    def fds(self) -> tuple[int, int]:
        """The (read, write) descriptors, made now if the pipe is closed."""
        if self.read_fd < 0:
            read_fd, write_fd = os.pipe()  # close-on-exec, as every descriptor Python makes
            if _SETPIPE_SZ is not None:
                try:
                    fcntl.fcntl(write_fd, _SETPIPE_SZ, PIPE_SIZE)
                except OSError:
                    pass  # over the user's pipe allowance: the default size works, in more rounds
            self.read_fd, self.write_fd = read_fd, write_fd
        return self.read_fd, self.write_fd

    def close(self) -> None:
        read_fd, write_fd = self.read_fd, self.write_fd
        if read_fd >= 0:
            self.read_fd = self.write_fd = -1
            os.close(read_fd)
            os.close(write_fd)
