"""benchmarks/certs.py: the certificates the benchmark writes are ones snakeway takes."""

from __future__ import annotations

from pathlib import Path

from benchmarks import certs
from snakeway.acme.filestore import FileStore


async def test_the_benchmarks_store_of_many_certificates_is_one_snakeway_loads(tmp_path: Path) -> None:
    """Row 8 writes its certificates straight into the file store's layout: the store must take them."""
    names = ["a.test", "b.test", "c.test"]
    certs.fill_store(tmp_path / "certs", names, certs.CA())
    store = FileStore(tmp_path / "certs", tmp_path / "data")
    assert sorted(await store.list()) == names
    assert sorted(await store.index()) == names
    bundle = await store.load("b.test")
    assert bundle is not None and bundle.domains == ("b.test",)
