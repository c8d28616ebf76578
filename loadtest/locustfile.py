"""Feira's locust suites: shoppers on the web and in the app, merchants, and a flash sale.

    .venv/bin/locust -f loadtest/locustfile.py --headless -u 50 -r 10 -t 1m \\
        --csv var/locust/peak --html var/locust/peak.html --host http://127.0.0.1:8000

``--profile`` (locust's own run label, which this suite reads; or
``FEIRA_LOADTEST_PROFILE``) picks the users:

* ``peak`` (default): web shoppers, app users and flash-sale buyers weighted 55 : 35 : 10,
  plus one merchant back office (only when merchant credentials are given);
* ``shopper``, ``mobile``, ``merchant``, ``flash``: one journey alone.

``--think-scale`` (``FEIRA_LOADTEST_THINK_SCALE``) multiplies every think time (1 = human
pace; 0.1 for quick functional runs); ``--seed`` (``FEIRA_LOADTEST_SEED``) makes each user's
choices reproducible. Credentials come from the environment only (never the command line,
where ``ps`` shows them): ``FEIRA_LOADTEST_API_KEY`` (an ``internal``-plan key, sent as
``X-Api-Key`` on every request), ``FEIRA_LOADTEST_MERCHANT_KEY`` or
``FEIRA_LOADTEST_MERCHANT_TOKEN``. See ``loadtest/README.md`` and ``loadtest/journeys.py``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

# locust puts this file's directory on sys.path; the suite imports as the `loadtest`
# package from the repository root (and uses storage.demo there when it can).
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from locust import events  # noqa: E402
from locust.argument_parser import LocustArgumentParser  # noqa: E402
from locust.env import Environment  # noqa: E402
from locust.runners import Runner, WorkerRunner  # noqa: E402

from loadtest.journeys import (  # noqa: E402
    FeiraUser,
    FlashBuyer,
    Merchant,
    MobileShopper,
    WebShopper,
    merchant_credentials,
)
from loadtest.names import PROFILES as PROFILE_NAMES  # noqa: E402

log = logging.getLogger("feira.loadtest")

PROFILE_ENV = "FEIRA_LOADTEST_PROFILE"
PROFILES: dict[str, tuple[type[FeiraUser], ...]] = {
    "peak": (WebShopper, MobileShopper, FlashBuyer, Merchant),
    "shopper": (WebShopper,),
    "mobile": (MobileShopper,),
    "merchant": (Merchant,),
    "flash": (FlashBuyer,),
}
DEFAULT_PROFILE = "peak"
assert tuple(PROFILES) == PROFILE_NAMES
# Merchants do not grow with the shoppers: the peak mix runs this many, whatever -u says.
PEAK_MERCHANTS = 1

__all__ = ["PROFILES", "FlashBuyer", "Merchant", "MobileShopper", "WebShopper"]


def add_arguments(parser: LocustArgumentParser) -> None:
    parser.add_argument(
        "--think-scale",
        type=float,
        default=1.0,
        env_var="FEIRA_LOADTEST_THINK_SCALE",
        help="multiply every think time by this (1: human pace)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        env_var="FEIRA_LOADTEST_SEED",
        include_in_web_ui=False,
        help="seed every user's random choices (reproducible runs)",
    )


def profile_of(options: Any) -> str:
    """locust's own ``--profile`` (a run label it also prints in the HTML report), else
    ``FEIRA_LOADTEST_PROFILE``, else ``peak``."""
    return (
        getattr(options, "profile", None)
        or os.environ.get(PROFILE_ENV, "").strip()
        or DEFAULT_PROFILE
    )


def classes_for(profile: str, *, merchants: bool) -> list[type[FeiraUser]]:
    """The user classes of ``profile``; merchants only with credentials (``peak`` drops
    them with a warning, ``merchant`` cannot run without them)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; one of {', '.join(sorted(PROFILES))}")
    chosen = list(PROFILES[profile])
    if not merchants and Merchant in chosen:
        if chosen == [Merchant]:
            raise ValueError(
                "the merchant profile needs FEIRA_LOADTEST_MERCHANT_KEY (a merchant API key) "
                "or FEIRA_LOADTEST_MERCHANT_TOKEN (a merchant access token)"
            )
        log.warning("no merchant credentials: running profile %r without merchants", profile)
        chosen.remove(Merchant)
    return chosen


def select_profile(environment: Environment, runner: Runner | None = None, **_: Any) -> None:
    # Workers spawn whatever classes the master names; only the master (or a local
    # runner) chooses. Classes named on the command line win over the profile.
    if isinstance(runner, WorkerRunner):
        return
    options = environment.parsed_options
    if options is not None and getattr(options, "user_classes", None):
        return
    profile = profile_of(options)
    chosen = classes_for(profile, merchants=merchant_credentials())
    if profile == "peak":
        Merchant.fixed_count = PEAK_MERCHANTS
    environment.user_classes[:] = chosen
    environment.profile = profile  # the HTML report's label
    log.info("profile %s: %s", profile, ", ".join(c.__name__ for c in chosen))


# locust's EventHook.add_listener has no annotations.
events.init_command_line_parser.add_listener(add_arguments)  # type: ignore[no-untyped-call]
events.init.add_listener(select_profile)  # type: ignore[no-untyped-call]
