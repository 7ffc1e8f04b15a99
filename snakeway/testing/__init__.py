"""Helpers for testing code that uses snakeway, as :mod:`trio.testing` is for trio.

Nothing in snakeway itself imports this package; it is shipped so that
snakeway's tests and benchmarks, and tests of code built on snakeway, can run
certificate issuance and renewal in-process, on trio's ``MockClock``.

* :class:`FakeCA`: an in-process ACME CA with the
  :class:`~snakeway.acme.backend.AcmeBackend` API. It signs real certificates
  dated by an injected wall clock, records every call, and fails on demand:
  :meth:`FakeCA.fail_next`, a queue of :class:`PlannedFailure` (HTTP status,
  ``Retry-After``, problem type) or :attr:`FakeCA.unreachable`.
  :data:`STEPS` names the steps a failure can be planned at; a
  :data:`Validator` can really check an answered challenge. For simulations it
  also fails at random (``fault_rate``), serves one request at a time, has
  names that never validate, enforces :class:`CALimitSettings` (Let's Encrypt's
  rate limits, counted in :class:`CALimits`), answers ARI per an
  :class:`AriPolicy`, and keeps a :class:`NameRecord` per name.
* :class:`TrioLinkedClock`: a :class:`~snakeway.clock.WallClock` whose time is
  ``epoch + trio.current_time()``, so an autojump ``MockClock`` fast-forwards
  calendar dates (certificate lifetimes, renewal windows) too.
* :func:`inline`: an ``offload`` that runs blocking work in the calling task
  instead of a worker thread, which would let ``MockClock`` jump mid-work.
* :func:`cert_dates`: ``(not_before, not_after)`` of a PEM certificate.

* :mod:`snakeway.testing.simulate`: the renewal simulator (the real
  ``CertManager`` on ``MockClock`` against a ``FakeCA``; ``python -m
  snakeway.testing.simulate``).

Private modules: :mod:`~snakeway.testing._fakeca` (the CA),
:mod:`~snakeway.testing._fakedesk` (its orders from newOrder to chain, and its signing root),
:mod:`~snakeway.testing._fakeorders` (order records, validation, request latency and faults),
:mod:`~snakeway.testing._fakebook` (accounts, issued certificates, records),
:mod:`~snakeway.testing._fakeari` (ARI answers), :mod:`~snakeway.testing._fakelimits` (rate limits),
:mod:`~snakeway.testing._fakecrypto` (its root, leaves and JWK thumbprints),
:mod:`~snakeway.testing._fakefaults` (planned failures),
:mod:`~snakeway.testing._clock`, :mod:`~snakeway.testing._offload`,
:mod:`~snakeway.testing._certs`. See docs/testing.md for an example.
"""

from snakeway.testing._certs import cert_dates as cert_dates
from snakeway.testing._clock import TrioLinkedClock as TrioLinkedClock
from snakeway.testing._fakeari import AriPolicy as AriPolicy
from snakeway.testing._fakeari import NameRecord as NameRecord
from snakeway.testing._fakeari import lifetime_window as lifetime_window
from snakeway.testing._fakeca import FakeCA as FakeCA
from snakeway.testing._fakeca import Validator as Validator
from snakeway.testing._fakefaults import STEPS as STEPS
from snakeway.testing._fakefaults import PlannedFailure as PlannedFailure
from snakeway.testing._fakelimits import CALimits as CALimits
from snakeway.testing._fakelimits import CALimitSettings as CALimitSettings
from snakeway.testing._offload import inline as inline
