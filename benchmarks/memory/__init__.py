"""Hot-state memory (issue 8): resident memory of the shard actors per 100,000 active carts
of three lines and per 1,000,000 SKUs of stock, and of a BFF replica's caches per 100,000
cached products; and which maps that grow with traffic are bounded, and by what.

    .venv/bin/python -m benchmarks.memory --carts 100000 --skus 1000000 --products 100000

Needs nothing running: it starts a local Ray cluster of its own (not on 6379), with one
shard of each kind and the embedded stores in a temporary directory, and stops it at the
end.

- **Shards.** The cart and the inventory shard are the real actors, loaded through the
  shard client a BFF replica uses: carts created and filled (``create``, then ``add``
  three SKUs) with ids made the way the API makes them, SKUs from the demo catalog and an
  operation id per mutation (the idempotency memory is hot state too); stock set with
  ``set_on_hand``, one operation per SKU, each batch written to the ledger first. The
  figure is the growth of the actor process's resident set (``VmRSS``, after a ``gc``
  in the actor) divided by what was loaded. One shard holds everything, so its op log
  (``op_log_size`` replies) is full and counted once.
- **Cross-check without Ray.** The same operations, pickled as on the wire, applied to
  the shard services in this process, and the domain alone (``CartBook``, ``Inventory``),
  measured with tracemalloc; also what the full op log costs.
- **Replica caches.** The BFF's caches (``actors/shop.py``) filled from a seeded catalog
  with the values a replica keeps (product documents as the catalog store decodes them;
  quotes and stock as shard replies unpickle), measured with tracemalloc.
"""
