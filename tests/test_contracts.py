"""A job type is declared once, in its domain app's jobtypes.py; these tests prove the pieces
built from the declarations agree: what publishers may send, the handlers, the cron table, the
cleanups, and that the core itself names no domain's job type or queue."""

from __future__ import annotations

import ast
import re
import typing

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from cleanup.registry import CLEANUPS
from supworker import handlers, jobtypes
from supworker.handlers import handles, handles_batch, load_handlers
from tests.testenv import ROOT


def test_every_declared_job_type_has_a_handler_and_every_handler_a_declaration():
    load_handlers()
    declared, registered = set(jobtypes.job_types()), set(handlers._HANDLERS)
    assert declared - registered == set(), "declared, and no handler runs it"
    assert registered - declared == set(), "a handler no job reaches"


def test_what_a_publisher_may_send_is_exactly_the_published_job_types():
    """Each domain's schema (its `type` values, or its only type) against the declarations."""
    sendable = set()
    for domain in jobtypes.domains().values():
        field = domain.schema.model_fields.get("type")
        kinds = (domain.only_type,) if domain.only_type else typing.get_args(field.annotation if field else None)
        assert kinds, f"domain {domain.name} says neither its types nor its only type"
        sendable |= {f"{domain.name}.{kind}" for kind in kinds}
    published = {name for name, job_type in jobtypes.job_types().items() if job_type.published}
    assert sendable - published == set(), "accepted, then nowhere to go"
    assert published - sendable == set(), "declared as published, but no message can ask for it"


def test_every_cron_entry_is_a_job_type_and_every_cleanup_has_one():
    scheduled = {job_type.short_name for job_type in jobtypes.scheduled()}
    assert set(settings.CONFIG.cron) == scheduled, "the cron table is read from the declarations"
    cleanup_types = {name for name in jobtypes.job_types() if name.startswith("cleanup.")}
    assert cleanup_types == {f"cleanup.{name}" for name in CLEANUPS}, "a cleanup without a job type, or the reverse"


def test_every_job_type_goes_to_queues_a_worker_kind_drains():
    queues = {spec.name for spec in jobtypes.queues()}
    for job_type in jobtypes.job_types().values():
        assert {job_type.queue, job_type.high_queue} <= queues, job_type.name


@pytest.mark.parametrize("register", [handles, handles_batch])
def test_a_handler_for_an_undeclared_job_type_is_refused_when_it_registers(register):
    """A worker registers every handler as it starts (prepare_worker), so it would not start."""
    with pytest.raises(ImproperlyConfigured, match=re.escape("'media.hologram', which no app declares")):
        register("media.hologram")


def _string_constants(path) -> set[str]:
    """The string literals of a module that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    }


def test_the_core_names_no_job_type_domain_or_queue():
    """The core is machinery: a new job type is added in its app alone, not in supworker/."""
    names = set(jobtypes.job_types()) | set(jobtypes.domains()) | {spec.name for spec in jobtypes.queues()}
    names |= {kind for kind in jobtypes.worker_kinds()}
    # The settings module is the project's, not the core's: it lists the installed apps.
    core = [p for p in (ROOT / "supworker").rglob("*.py") if "migrations" not in p.parts and p.name != "settings.py"]
    found = {(str(path.relative_to(ROOT)), text) for path in core for text in _string_constants(path) if text in names}
    assert found == set()
