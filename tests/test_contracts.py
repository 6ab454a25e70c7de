"""The tables that together make a job type agree: what publishers may send, its policy, its
handler, its cron entry, its cleanup. A job type added in one place and forgotten in another
fails here, not in production."""

from __future__ import annotations

import re
import typing

import pytest
from django.core.exceptions import ImproperlyConfigured

from cleanup.registry import CLEANUPS
from supworker import handlers
from supworker.config import CRON_DEFAULTS
from supworker.handlers import handles, handles_batch, load_handlers
from supworker.payloads import SCHEMAS, TYPED_BY_ROUTING_KEY
from supworker.policy import POLICIES
from supworker.queues import QUEUES


def publishable_job_types() -> set[str]:
    """Every job type a message can become: each domain's `type` values (OTPs are e-mails)."""
    types = set()
    for domain, schema in SCHEMAS.items():
        field = schema.model_fields.get("type")
        kinds = TYPED_BY_ROUTING_KEY.get(domain) or (typing.get_args(field.annotation) if field else ("email",))
        types |= {f"{domain}.{kind}" for kind in kinds}
    return types


def test_every_job_type_a_publisher_may_send_has_a_policy_and_a_handler():
    load_handlers()
    publishable = publishable_job_types()
    assert publishable - set(POLICIES) == set(), "accepted, then nowhere to go"
    registered = set(handlers._HANDLERS)
    assert set(POLICIES) - registered == set(), "a policy with no handler"
    assert registered - set(POLICIES) == set(), "a handler no job reaches"
    # What only the cron table runs: the cleanups publishers may not ask for.
    assert {t.removeprefix("cleanup.") for t in set(POLICIES) - publishable} <= set(CLEANUPS)


def test_every_cron_entry_and_every_cleanup_has_a_job_type():
    assert set(CRON_DEFAULTS) == set(CLEANUPS), "a cron entry without a cleanup, or a cleanup never scheduled"
    assert {f"cleanup.{name}" for name in CLEANUPS} <= set(POLICIES)
    assert {t for t in POLICIES if t.startswith("cleanup.")} == {f"cleanup.{name}" for name in CLEANUPS}


def test_every_policy_names_queues_that_exist():
    queues = {spec.name for spec in QUEUES}
    for policy in POLICIES.values():
        assert {policy.queue, policy.high_queue} <= queues, policy.job_type


@pytest.mark.parametrize("register", [handles, handles_batch])
def test_a_handler_for_an_undeclared_job_type_is_refused_when_it_registers(register):
    """A worker registers every handler as it starts (prepare_worker), so it would not start."""
    with pytest.raises(ImproperlyConfigured, match=re.escape("'media.hologram', which has no policy")):
        register("media.hologram")
