"""The privacy tests' fixtures: empty stores, and two users of one chat with data everywhere.
Registered by `pytest_plugins = ["tests.privacy_fixtures"]`."""

from __future__ import annotations

import uuid

import pytest

from privacy.models import UserExport, subject_of
from tests import helpers
from tests.privacy_data import archive, archive_row, everything_of, stored


@pytest.fixture
def empty_stores():
    """The media store and TEMP_DIR start empty (they are the tests' own directories)."""
    helpers.empty_stores()


@pytest.fixture
def two_users():
    """Ann, to be erased, and Bob, who writes to her in the same chat; an archive holding both,
    one holding only Ann; an export of Ann's."""
    ann, bob = uuid.uuid4(), uuid.uuid4()
    ann_data, bob_data = everything_of(ann, "ann"), everything_of(bob, "bob")
    shared = archive("archive/messages/2025/01/01/a.jsonl.gz", [archive_row(ann), archive_row(bob), archive_row(ann)])
    only_ann = archive("archive/messages/2025/01/02/b.jsonl.gz", [archive_row(ann)])
    export_key = stored("exports/ann-secret.zip")
    UserExport.objects.create(
        subject=subject_of(ann), job_id="ann-export", key=export_key, expires_at="2099-01-01 00:00Z"
    )
    return ann, bob, ann_data, bob_data, shared, only_ann, export_key
