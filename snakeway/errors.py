"""The exceptions snakeway raises on purpose.

Everything snakeway raises deliberately derives from :class:`SnakewayError`,
so a caller (the CLI, a reload, the per-connection error boundary) can tell
"you gave me something wrong" or "this request failed" from a bug.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import final


class SnakewayError(Exception):
    """Base class of the errors snakeway raises deliberately."""


@final
@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration, located precisely.

    Attributes:
        file: The file the problem is in, as the user named it (or as it was
            found by an include glob).
        line: 1-based line number. Problems about a whole file use line 1.
        key_path: Where in the file, e.g. ``ingress.web.bind.port`` or
            ``services[0].routes[1].path``; empty for the file as a whole.
        message: What is wrong, for a human.
    """

    file: Path
    line: int
    key_path: str
    message: str

    def __str__(self) -> str:
        if self.key_path:
            return f"{self.file}:{self.line}: {self.key_path}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"


@final
class ConfigError(SnakewayError):
    """The configuration is invalid; :attr:`problems` lists every problem found.

    ``str(error)`` gives one ``FILE:LINE: key.path: message`` line per problem,
    the format editors and CI annotators understand.
    """

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        if not self.problems:
            raise ValueError("ConfigError needs at least one problem")
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)


class IssuanceError(SnakewayError):
    """Getting a certificate from the ACME CA failed.

    Raised by :mod:`snakeway.acme.backend` for every failure of the CA, the
    network or the ACME library (the original exception is ``__cause__``).

    Attributes:
        status: The HTTP status of the CA's answer, if there was one.
        retry_after: When the CA asked us to come back (``Retry-After`` on a 429
            or 503), as an aware UTC datetime; ``None`` if it did not say.
        problem_type: The RFC 7807 problem ``type`` (e.g.
            ``urn:ietf:params:acme:error:rateLimited``), if the CA sent one.
        stage: Which step of an issuance failed (``"order"``, ``"validation"``,
            ``"finalize"``), set by the one that runs them; None elsewhere.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: datetime | None = None,
        problem_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.problem_type = problem_type
        self.stage: str | None = None
