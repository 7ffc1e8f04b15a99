"""The admin listener: a JSON API over HTTP, behind bearer tokens (see docs/operations.md, "Admin API").

Pure decisions live in small modules (:mod:`.auth`, :mod:`.routes`, :mod:`.figures`, :mod:`.certs`), the I/O
in thin trio shells (:mod:`.listener`, :mod:`.share`).
"""
