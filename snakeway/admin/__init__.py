"""The admin listener: a JSON API over HTTP, behind bearer tokens (see docs/operations.md, "Admin API").

Pure decisions live in small modules (:mod:`.auth`, :mod:`.routes`, :mod:`.figures`, :mod:`.certs`), the I/O
in thin trio shells: :mod:`.listener` (connections), :mod:`.api` (the handlers, reading the running server)
and :mod:`.share` (each worker's figures, for its siblings). A new endpoint (metrics, a status page) is one
entry in :data:`.routes.ROUTES` and one handler in :class:`.api.AdminApi`.
"""
