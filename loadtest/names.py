"""Names shared by the locust suite and the code that reads its reports.

Kept apart from ``journeys.py``: importing locust monkey-patches the whole process with
gevent, which a runner (``loadtest/run.py``, the ``feira`` command, pytest) must not suffer.
"""

from __future__ import annotations

# The flash sale's expected sell-out answers (409 insufficient_stock) are successes,
# reported on this row of their own.
FLASH_SOLD_OUT_NAME = "[flash] /v1/checkout sold out (409)"
PROFILES = ("peak", "shopper", "mobile", "merchant", "flash")
