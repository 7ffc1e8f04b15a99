"""Side-by-side benchmarks of snakeway, Caddy and nginx: ``make bench`` or ``python -m benchmarks.run``.

See docs/benchmarks.md. Not a test suite: nothing here is collected by pytest.
"""
