"""Each cleanup against real PostgreSQL and the real local media store: rows just before and
just after each cutoff, files really removed, dry runs that change nothing."""

from __future__ import annotations

import gzip
import json
import os
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone

from cleanup.base import Options, cleanup_lease
from cleanup.models import CleanupLease
from cleanup.orphaned_media import CURSOR_KEY
from cleanup.registry import CLEANUPS
from notifications.models import Device
from supworker.handlers import PermanentError
from supworker.models import (
    GlobalStatistics,
    Message,
    Story,
    TemporaryFile,
    UserPrekey,
    UserSession,
    UserStatistics,
    WebsocketConnection,
)
from tests import helpers
from tests.helpers import drain_queue, rq_items

# Run again through PgBouncer in transaction mode by `make test`.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pgbouncer]
pytest_plugins = ["tests.notification_fixtures"]
MINUTE = timedelta(minutes=1)


@pytest.fixture(autouse=True)
def empty_stores():
    """The media store and TEMP_DIR of the tests start empty (they are the tests' own directories)."""
    helpers.empty_stores()


def run(name: str, **options):
    return CLEANUPS[name](Options(**options))


def stored(key: str, content: bytes = b"data") -> str:
    if default_storage.exists(key):
        default_storage.delete(key)
    assert default_storage.save(key, ContentFile(content)) == key
    return key


def age(path_or_key: str, seconds: float) -> None:
    """Make a stored file look `seconds` old."""
    path = Path(path_or_key) if os.path.isabs(path_or_key) else Path(default_storage.path(path_or_key))
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_sessions_inactive_for_30_days_are_removed_and_no_others():
    now = timezone.now()
    user = uuid.uuid4()
    old = UserSession.objects.create(user_id=user, last_active_at=now - timedelta(days=30) - MINUTE)
    recent = UserSession.objects.create(user_id=user, last_active_at=now - timedelta(days=30) + MINUTE)
    never_old = UserSession.objects.create(user_id=user, last_active_at=None)
    UserSession.objects.filter(pk=never_old.pk).update(created_at=now - timedelta(days=31))
    never_new = UserSession.objects.create(user_id=user, last_active_at=None)

    preview = run("sessions", dry_run=True)
    assert preview["counts"] == {"sessions_to_remove": 2} and UserSession.objects.count() == 4

    summary = run("sessions", batch_size=1)
    assert set(UserSession.objects.values_list("pk", flat=True)) == {recent.pk, never_new.pk}
    assert summary["counts"]["sessions_removed"] == 2 and summary["batches"] >= 2
    assert not UserSession.objects.filter(pk__in=[old.pk, never_old.pk]).exists()
    assert run("sessions")["counts"].get("sessions_removed", 0) == 0, "a rerun is harmless"


def test_stories_expire_after_24_hours_losing_their_media_and_are_purged_later():
    now = timezone.now()
    user = uuid.uuid4()
    expired_key = stored(f"stories/{uuid.uuid4()}/a.jpg")
    thumb_key = stored(f"stories/{uuid.uuid4()}/t.jpg")
    kept_key = stored(f"stories/{uuid.uuid4()}/b.jpg")
    expired = Story.objects.create(user_id=user, media_url=expired_key, thumbnail_url=default_storage.url(thumb_key))
    fresh = Story.objects.create(user_id=user, media_url=kept_key)
    purgeable = Story.objects.create(user_id=user)
    Story.objects.filter(pk=expired.pk).update(created_at=now - timedelta(hours=24) - MINUTE)
    Story.objects.filter(pk=fresh.pk).update(created_at=now - timedelta(hours=24) + MINUTE)
    Story.objects.filter(pk=purgeable.pk).update(created_at=now - timedelta(days=9), deleted_at=now - timedelta(days=8))

    assert run("stories", dry_run=True)["counts"] == {"stories_to_expire": 1, "stories_to_purge": 1}
    assert default_storage.exists(expired_key)

    summary = run("stories")
    assert summary["counts"] == {"stories_expired": 1, "story_files_deleted": 2, "stories_purged": 1}
    expired.refresh_from_db()
    assert expired.deleted_at is not None and expired.media_url is None
    assert not default_storage.exists(expired_key) and not default_storage.exists(thumb_key)
    assert default_storage.exists(kept_key) and Story.objects.get(pk=fresh.pk).deleted_at is None
    assert not Story.objects.filter(pk=purgeable.pk).exists()


def test_temp_files_go_with_their_rows_and_crashed_jobs_leftovers_are_swept(tmp_path):
    now = timezone.now()
    temp_dir = settings.CONFIG.temp_dir
    temp_dir.mkdir(parents=True, exist_ok=True)
    old_file = temp_dir / f"old-{uuid.uuid4()}.part"
    old_file.write_bytes(b"x")
    new_file = temp_dir / f"new-{uuid.uuid4()}.part"
    new_file.write_bytes(b"x")
    outside = tmp_path / "not-ours.txt"  # a row may name anything; only our directories are touched
    outside.write_bytes(b"keep me")
    key = stored(f"tmp-uploads/{uuid.uuid4()}.bin")
    rows = {
        "old": TemporaryFile.objects.create(file_path=str(old_file)),
        "new": TemporaryFile.objects.create(file_path=str(new_file)),
        "outside": TemporaryFile.objects.create(file_path=str(outside)),
        "key": TemporaryFile.objects.create(file_path=key),
    }
    for name in ("old", "outside", "key"):
        TemporaryFile.objects.filter(pk=rows[name].pk).update(created_at=now - timedelta(hours=24) - MINUTE)
    TemporaryFile.objects.filter(pk=rows["new"].pk).update(created_at=now - timedelta(hours=24) + MINUTE)
    leftover = temp_dir / f"job-{uuid.uuid4()}"
    leftover.mkdir()
    (leftover / "frame.png").write_bytes(b"x")
    age(str(leftover), 25 * 3600)
    age(str(new_file), 25 * 3600)  # an old file whose row is young stays: the row decides

    summary = run("temp_files")
    assert summary["counts"]["rows_removed"] == 3 and summary["counts"]["files_removed"] == 2
    assert not old_file.exists() and not default_storage.exists(key)
    assert outside.read_bytes() == b"keep me", "a path outside TEMP_DIR and MEDIA_ROOT is never deleted"
    assert not leftover.exists() and summary["counts"]["leftovers_swept"] >= 1
    assert list(TemporaryFile.objects.values_list("pk", flat=True)) == [rows["new"].pk]


@pytest.mark.parametrize("policy", ["archive", "delete", "off"])
def test_old_messages_are_archived_or_deleted_with_their_media_by_policy(policy, settings):

    settings.CONFIG = settings.CONFIG.with_section("cleanup", message_policy=policy)
    now = timezone.now()
    chat, sender = uuid.uuid4(), uuid.uuid4()
    media_key = stored(f"media/{uuid.uuid4()}/photo.jpg")
    old = [
        Message.objects.create(
            sender_id=sender, chat_id=chat, content=f"old {n}", media_url=media_key if n == 0 else None
        )
        for n in range(3)
    ]
    young = Message.objects.create(sender_id=sender, chat_id=chat, content="young")
    Message.objects.filter(pk__in=[m.pk for m in old]).update(created_at=now - timedelta(days=365) - MINUTE)
    Message.objects.filter(pk=young.pk).update(created_at=now - timedelta(days=365) + MINUTE)

    summary = run("messages", batch_size=2)
    remaining = set(Message.objects.values_list("pk", flat=True))
    if policy == "off":
        assert remaining == {m.pk for m in old} | {young.pk} and default_storage.exists(media_key)
        return
    assert remaining == {young.pk}
    assert summary["counts"]["messages_removed"] == 3 and not default_storage.exists(media_key)
    archives = sorted(default_storage.listdir("archive/messages")[0]) if policy == "archive" else []
    if policy == "archive":
        assert summary["counts"]["archives_written"] == 2  # batches of 2: two archive objects
        keys = [k for k in _walk("archive/messages") if k.endswith(".jsonl.gz")]
        lines = [
            json.loads(line) for k in keys for line in gzip.decompress(default_storage.open(k).read()).splitlines()
        ]
        assert sorted(line["content"] for line in lines if line["chat_id"] == str(chat)) == ["old 0", "old 1", "old 2"]
    else:
        assert "archives_written" not in summary["counts"] and archives == []


def _walk(prefix: str) -> list[str]:
    dirs, files = default_storage.listdir(prefix)
    return [f"{prefix}/{f}" for f in files] + [k for d in dirs for k in _walk(f"{prefix}/{d}")]


def test_used_prekeys_go_after_grace_and_users_low_on_prekeys_get_one_silent_push_a_day(redis_conn, fcm_server):
    now = timezone.now()
    low_user, stocked_user, no_device_user = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for user in (low_user, stocked_user, no_device_user):
        Device.objects.create(
            user_id=user, registration_id=f"token-{user}", type="android", active=user != no_device_user
        )
    # Signed in, no prekeys left: asked too; only the push handler knows it has no device to wake.
    UserSession.objects.create(user_id=no_device_user, last_active_at=now)
    for n in range(12):
        UserPrekey.objects.create(user_id=stocked_user, prekey_id=n, public_key="BQ==")
    UserPrekey.objects.create(user_id=low_user, prekey_id=1, public_key="BQ==")
    gone = UserPrekey.objects.create(
        user_id=low_user, prekey_id=2, public_key="BQ==", used_at=now - timedelta(days=7) - MINUTE
    )
    kept = UserPrekey.objects.create(
        user_id=low_user, prekey_id=3, public_key="BQ==", used_at=now - timedelta(days=7) + MINUTE
    )

    assert run("prekeys", dry_run=True)["counts"] == {"used_prekeys_to_remove": 1, "users_low_on_prekeys": 2}
    summary = run("prekeys")
    assert summary["counts"] == {"prekeys_removed": 1, "refill_pushes_enqueued": 2}
    assert not UserPrekey.objects.filter(pk=gone.pk).exists() and UserPrekey.objects.filter(pk=kept.pk).exists()
    pushes = rq_items(redis_conn, "notifications_high")
    assert {p["job_type"] for p in pushes} == {"notification.push"} and {p["payload"]["title"] for p in pushes} == {""}
    assert {p["payload"]["data"]["unused"]: p["payload"]["userIds"] for p in pushes} == {
        "1": [str(low_user)],
        "0": [str(no_device_user)],
    }
    drain_queue(redis_conn, "notifications_high")
    assert [r["message"]["token"] for r in fcm_server.requests] == [f"token-{low_user}"], "active devices only"
    (message,) = fcm_server.messages_to(f"token-{low_user}")
    assert message["data"] == {"kind": "prekeys_low", "unused": "1"} and "notification" not in message
    assert run("prekeys")["counts"].get("refill_pushes_enqueued", 0) == 0, "one request a day"


def test_prekeys_when_nobody_is_low_on_prekeys_removes_used_ones_and_asks_nobody(redis_conn):
    stocked_user = uuid.uuid4()
    for n in range(12):
        UserPrekey.objects.create(user_id=stocked_user, prekey_id=n, public_key="BQ==")
    UserPrekey.objects.create(
        user_id=stocked_user, prekey_id=99, public_key="BQ==", used_at=timezone.now() - timedelta(days=8)
    )

    assert run("prekeys")["counts"] == {"prekeys_removed": 1, "refill_pushes_enqueued": 0}
    assert rq_items(redis_conn, "notifications_high") == []


def test_orphaned_media_is_deleted_when_old_and_unreferenced_and_the_scan_resumes(redis_conn):
    message = Message.objects.create(sender_id=uuid.uuid4(), chat_id=uuid.uuid4())
    by_key = stored("media/shared/by-key.jpg")
    by_url = stored("media/shared/by-url.jpg")
    Message.objects.create(sender_id=uuid.uuid4(), chat_id=uuid.uuid4(), media_url=by_key)
    Story.objects.create(user_id=uuid.uuid4(), thumbnail_url=default_storage.url(by_url))
    by_plain_path = stored("media/shared/IMG 0001.jpg")  # MEDIA_URL + key, written unencoded by an API
    Story.objects.create(user_id=uuid.uuid4(), media_url="/media/media/shared/IMG 0001.jpg")
    owned = stored(f"media/{message.pk}/poster.jpg")  # under the folder of a message that exists
    orphans = [stored(f"media/lost/{n:03}.jpg") for n in range(5)]
    young = stored("media/lost/young.jpg")
    elsewhere = stored(f"uploads/{uuid.uuid4()}.jpg")  # outside the scanned prefix
    for key in (by_key, by_url, by_plain_path, owned, *orphans, elsewhere):
        age(key, 25 * 3600)

    preview = run("orphaned_media", dry_run=True)
    assert preview["counts"]["orphans_found"] == 5 and all(default_storage.exists(k) for k in orphans)

    summary = run("orphaned_media", batch_size=3, time_budget_s=0)  # one page, then stop, position saved
    assert summary["more"] is True and redis_conn.get(CURSOR_KEY + "media/") is not None
    assert summary["counts"]["objects_scanned"] == 3
    finished = run("orphaned_media", batch_size=3)
    assert finished["more"] is False and redis_conn.get(CURSOR_KEY + "media/") is None
    assert not any(default_storage.exists(k) for k in orphans)
    assert summary["counts"].get("orphans_deleted", 0) + finished["counts"]["orphans_deleted"] == 5
    for key in (by_key, by_url, by_plain_path, owned, young, elsewhere):
        assert default_storage.exists(key), key


def test_stale_websockets_are_removed_and_sessions_left_without_one_go_inactive():
    now = timezone.now()
    user = uuid.uuid4()
    lonely = UserSession.objects.create(user_id=user, last_active_at=now)
    busy = UserSession.objects.create(user_id=user, last_active_at=now)
    stale = [
        WebsocketConnection.objects.create(user_id=user, session_id=lonely.pk, server_id="gw-1"),
        WebsocketConnection.objects.create(user_id=user, session_id=busy.pk, server_id="gw-1"),
    ]
    live = WebsocketConnection.objects.create(user_id=user, session_id=busy.pk, server_id="gw-2")
    WebsocketConnection.objects.filter(pk__in=[c.pk for c in stale]).update(
        last_heartbeat_at=now - timedelta(minutes=16)
    )
    WebsocketConnection.objects.filter(pk=live.pk).update(last_heartbeat_at=now - timedelta(minutes=14))

    summary = run("websockets")
    assert summary["counts"] == {"connections_removed": 2, "sessions_marked_inactive": 1}
    assert list(WebsocketConnection.objects.values_list("pk", flat=True)) == [live.pk]
    lonely.refresh_from_db()
    busy.refresh_from_db()
    assert lonely.is_active is False and busy.is_active is True


def test_statistics_aggregate_per_user_and_globally():
    alice, bob = uuid.uuid4(), uuid.uuid4()
    chat = uuid.uuid4()
    for _ in range(3):
        Message.objects.create(sender_id=alice, chat_id=chat, content="hi")
    Message.objects.create(sender_id=bob, chat_id=chat, content="yo")
    Story.objects.create(user_id=bob)
    UserSession.objects.create(user_id=bob, is_active=True, last_active_at=timezone.now())
    UserSession.objects.create(user_id=bob, is_active=False)

    summary = run("statistics")
    assert summary["counts"]["users_updated"] == 2
    stats = {s.user_id: s for s in UserStatistics.objects.all()}
    assert (stats[alice].messages_sent, stats[alice].stories, stats[alice].active_sessions) == (3, 0, 0)
    assert (stats[bob].messages_sent, stats[bob].stories, stats[bob].active_sessions) == (1, 1, 1)
    snapshot = GlobalStatistics.objects.get()
    assert (snapshot.users, snapshot.messages, snapshot.stories, snapshot.active_sessions) == (2, 4, 1, 1)


def test_maintenance_vacuums_every_service_table_and_reports_sizes():
    summary = run("maintenance")
    sizes = summary["details"]["table_bytes"]
    assert summary["counts"]["tables_vacuumed"] == len(sizes) >= 10
    assert {"messages", "user_sessions", "job_runs"} <= set(sizes)
    assert all(s["before"] > 0 and s["after"] > 0 for s in sizes.values())


def test_a_progress_callback_gets_the_total_first_and_sees_the_run_reach_it():
    now = timezone.now()
    user = uuid.uuid4()
    stories = [Story.objects.create(user_id=user) for _ in range(4)]
    Story.objects.filter(pk__in=[s.pk for s in stories[:3]]).update(
        created_at=now - timedelta(days=9), deleted_at=now - timedelta(days=8)
    )  # purged
    Story.objects.filter(pk=stories[3].pk).update(created_at=now - timedelta(days=2))  # expires
    for _ in range(3):
        UserSession.objects.create(user_id=user, last_active_at=now - timedelta(days=31))
        UserSession.objects.create(user_id=user, last_active_at=None)
    UserSession.objects.filter(last_active_at=None).update(created_at=now - timedelta(days=31))
    for number in range(3):
        age(stored(f"media/lost/{number}.jpg"), 25 * 3600)

    # (cleanup, its total, where its bar ends): orphaned_media cannot know its total; it counts objects listed.
    expected = [("stories", 4, 4), ("sessions", 6, 6), ("maintenance", 13, 13), ("orphaned_media", None, 3)]
    for name, total, done in expected:
        seen: list[tuple[int | None, int]] = []
        CLEANUPS[name](Options(batch_size=2), progress=lambda r, seen=seen: seen.append((r.total, r.done)))
        assert seen[0] == (total, 0) and seen[-1] == (total, done), (name, seen)
    seen = []
    CLEANUPS["sessions"](Options(dry_run=True), progress=seen.append)
    assert seen == [], "a dry run only counts: nothing to follow"


def test_a_second_run_of_the_same_cleanup_does_nothing_while_the_first_holds_the_lock():
    UserSession.objects.create(user_id=uuid.uuid4(), last_active_at=timezone.now() - timedelta(days=40))
    holding, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with cleanup_lease("sessions", 60) as lease:
            assert lease is not None
            holding.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    holding.wait(10)
    try:
        assert run("sessions") == {"cleanup": "sessions", "skipped": "another run holds the lock"}
        assert UserSession.objects.count() == 1
    finally:
        release.set()
        holder.join()
    assert run("sessions")["counts"]["sessions_removed"] == 1


def test_a_lease_a_killed_worker_left_runs_out_and_the_next_run_works():
    """A worker killed mid-run never releases its lease: until it expires, runs are skipped;
    after, the next run takes it over and does the work."""
    UserSession.objects.create(user_id=uuid.uuid4(), last_active_at=timezone.now() - timedelta(days=40))
    CleanupLease.objects.create(name="sessions", holder="killed:1:x", expires_at=timezone.now() + MINUTE)
    assert run("sessions") == {"cleanup": "sessions", "skipped": "another run holds the lock"}
    CleanupLease.objects.filter(name="sessions").update(expires_at=timezone.now() - MINUTE)

    assert run("sessions")["counts"]["sessions_removed"] == 1
    assert not CleanupLease.objects.exists(), "a run releases its lease at the end"


def test_a_run_whose_lease_another_run_took_over_stops_and_undoes_its_batch():
    """A run that stalled past its lease finds, at its next batch, that another run holds the
    lease: it stops there and that batch is rolled back, so the two never work side by side."""
    old = timezone.now() - timedelta(days=40)
    UserSession.objects.bulk_create([UserSession(user_id=uuid.uuid4(), last_active_at=old) for _ in range(5)])

    def taken_over(progress_run) -> None:
        if progress_run.batches == 1:  # as if the lease ran out and another run took it
            CleanupLease.objects.filter(name="sessions").update(holder="other:2:y")

    summary = CLEANUPS["sessions"](Options(batch_size=2), progress=taken_over)
    assert summary["counts"]["sessions_removed"] == 2, "only the batch before the take-over"
    assert summary["details"]["stopped"] == "the lease on sessions ran out and another run took it"
    assert UserSession.objects.count() == 3
    assert CleanupLease.objects.get(name="sessions").holder == "other:2:y", "the other run's lease is left alone"


def test_two_concurrent_runs_do_the_work_once():
    old = timezone.now() - timedelta(days=40)
    UserSession.objects.bulk_create([UserSession(user_id=uuid.uuid4(), last_active_at=old) for _ in range(3000)])
    results = []

    def one_run() -> None:
        results.append(run("sessions", batch_size=100))
        connection.close()

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    removed = sum(r.get("counts", {}).get("sessions_removed", 0) for r in results)
    assert removed == 3000 and UserSession.objects.count() == 0


def test_job_records_older_than_the_retention_are_removed():
    from supworker.models import JobRun

    now = timezone.now()
    old = JobRun.objects.create(job_id="old", job_type="t", queue="q", finished_at=now - timedelta(days=30) - MINUTE)
    recent = JobRun.objects.create(
        job_id="recent", job_type="t", queue="q", finished_at=now - timedelta(days=30) + MINUTE
    )
    running = JobRun.objects.create(job_id="running", job_type="t", queue="q", finished_at=None)
    assert run("job_records", dry_run=True)["counts"] == {"job_records_to_remove": 1}
    assert run("job_records")["counts"] == {"job_records_removed": 1}
    assert set(JobRun.objects.values_list("pk", flat=True)) == {recent.pk, running.pk}
    assert not JobRun.objects.filter(pk=old.pk).exists()


def test_older_than_zero_means_everything_up_to_now_not_the_default_age():
    from supworker.models import JobRun

    just_finished = JobRun.objects.create(job_id="j", job_type="t", queue="q", finished_at=timezone.now() - MINUTE)
    assert run("job_records")["counts"] == {"job_records_removed": 0}, "the default keeps it 30 days"

    zero = Options.from_payload({"olderThan": "0s"})
    assert zero.older_than == timedelta(0)
    assert CLEANUPS["job_records"](zero)["counts"] == {"job_records_removed": 1}
    assert not JobRun.objects.filter(pk=just_finished.pk).exists()


@pytest.mark.parametrize("older_than", [0, 30, ""], ids=["zero", "a number", "empty"])
def test_an_older_than_that_is_not_a_duration_text_is_refused(older_than):
    with pytest.raises(PermanentError, match=rf"invalid cleanup options: {older_than!r} is not a duration"):
        Options.from_payload({"olderThan": older_than})
