"""activity.selectors and activity.charts read exactly the numbers of known rows."""

from datetime import timedelta

import pytest

from activity import charts, selectors
from activity.recording import record
from tests.activity_rows import HOUR, MIB, NOW, TODAY, known_activity


@pytest.fixture
def engines(org):
    return known_activity(org)


def nonzero(values, starts):
    return {starts[i]: v for i, v in enumerate(values) if v}


def test_windows_cover_the_range_in_utc_buckets():
    day = selectors.window("24h", now=NOW)
    assert (day.bucket, len(day.starts), day.starts[0], day.starts[-1]) == ("hour", 24, HOUR - timedelta(hours=23), HOUR)
    week = selectors.window("7d", now=NOW)
    assert (week.bucket, len(week.starts), week.starts[0], week.starts[-1]) == ("day", 7, TODAY - timedelta(days=6), TODAY)
    assert len(selectors.window("7d", "hour", now=NOW).starts) == 168
    assert selectors.window(None, "", now=NOW).range == "7d"


@pytest.mark.parametrize(
    "range_key, bucket, field",
    [
        ("1y", None, "range"),
        ("7d", "minute", "bucket"),
        ("30d", "hour", "bucket"),
        ("24h ; drop", None, "range"),
        ("24h", "day", "bucket"),  # one calendar day would be labelled 24 hours
    ],
)
def test_bad_windows_name_the_field(range_key, bucket, field):
    with pytest.raises(selectors.BadWindow) as caught:
        selectors.window(range_key, bucket, now=NOW)
    assert caught.value.field == field


def test_windows_say_what_their_buckets_cover():
    assert selectors.window("24h", now=NOW).description == (
        "the last 24 hours, by the hour (UTC), this hour so far included"
    )
    assert selectors.window("7d", now=NOW).description == "the last 7 calendar days (UTC), today so far included"


def test_hourly_buckets_stop_where_hours_are_rolled_up(settings):
    settings.ACTIVITY_DAYS = 3
    assert len(selectors.window("24h", now=NOW).starts) == 24
    with pytest.raises(selectors.BadWindow, match="up to 3 days"):
        selectors.window("7d", "hour", now=NOW)


def test_hourly_series_of_the_organization(org, engines):
    win = selectors.window("24h", now=NOW)
    found = selectors.series(org, win)
    starts = win.starts
    two_ago = HOUR - timedelta(hours=2)
    assert nonzero(found.values["bytes_up"], starts) == {two_ago: 2 * MIB, HOUR: 4 * MIB}
    assert nonzero(found.values["bytes_down"], starts) == {HOUR: 6 * MIB}
    # Yesterday's 14:00 is the 25th hour back: outside the 24 hours.
    assert nonzero(found.values["shared_steps"], starts) == {HOUR: 5}
    assert nonzero(found.values["skipped_bytes"], starts) == {}
    assert nonzero(found.values["download_urls"], starts) == {HOUR: 8}
    assert nonzero(found.values["imports"], starts) == {HOUR - timedelta(hours=3): 1, HOUR: 2}
    assert nonzero(found.values["exports_delivered"], starts) == {two_ago: 4}
    assert nonzero(found.values["exports_refused"], starts) == {two_ago: 3}


def test_daily_series_add_hours_and_rolled_up_days(org, engines):
    week = selectors.window("7d", now=NOW)
    found = selectors.series(org, week)
    yesterday = TODAY - timedelta(days=1)
    assert nonzero(found.values["shared_steps"], week.starts) == {yesterday: 3, TODAY: 5}
    assert nonzero(found.values["skipped_bytes"], week.starts) == {yesterday: 8 * MIB}
    assert nonzero(found.values["upload_skips"], week.starts) == {yesterday: 2}
    assert nonzero(found.values["download_urls"], week.starts) == {TODAY: 8}
    month = selectors.window("30d", now=NOW)
    found = selectors.series(org, month)
    ten_ago = TODAY - timedelta(days=10)
    assert nonzero(found.values["download_urls"], month.starts) == {ten_ago: 40, TODAY: 8}
    assert nonzero(found.values["exports_delivered"], month.starts) == {ten_ago: 9, TODAY: 4}


def test_series_of_one_engine(org, engines):
    builder, laptop = engines
    week = selectors.window("7d", now=NOW)
    found = selectors.series(org, week, ["shared_steps", "download_urls", "bytes_up"], engine_ref=laptop.pk)
    assert nonzero(found.values["shared_steps"], week.starts) == {TODAY - timedelta(days=1): 3, TODAY: 5}
    assert nonzero(found.values["download_urls"], week.starts) == {TODAY: 7}
    assert found.total("bytes_up") == 0
    unmatched = selectors.series(org, week, ["download_urls"], engine_ref=0)
    assert unmatched.total("download_urls") == 1


def test_totals_over_a_range_and_over_all_history(org, engines):
    everything = selectors.totals(org)
    assert everything["download_urls"] == 48 and everything["exports_delivered"] == 13
    assert everything["shared_steps"] == 8 and everything["bytes_up"] == 6 * MIB
    today = selectors.totals(org, since=TODAY)
    assert today["download_urls"] == 8 and today["shared_steps"] == 5 and today["exports_refused"] == 3
    assert selectors.totals(org, since=TODAY, until=HOUR)["download_urls"] == 0


def test_storage_takes_the_last_sample_of_each_bucket(org, engines):
    day = selectors.window("24h", now=NOW)
    found = selectors.storage_series(org, day)
    present = {day.starts[i]: (found["layer_bytes"][i], found["mount_bytes"][i], found["unreferenced_bytes"][i])
               for i in range(24) if found["layer_bytes"][i] is not None}
    assert present == {HOUR - timedelta(hours=3): (10 * MIB, 2 * MIB, 0), HOUR: (12 * MIB, 3 * MIB, 1 * MIB)}
    week = selectors.window("7d", now=NOW)
    found = selectors.storage_series(org, week)
    assert found["layer_bytes"] == [None, 4 * MIB, None, None, None, None, 12 * MIB]


def test_engine_summaries_in_one_query(org, engines, django_assert_num_queries):
    builder, laptop = engines
    with django_assert_num_queries(1):
        found = selectors.engine_activity(org)
    assert found[builder.pk] == selectors.EngineActivity(
        last_import=HOUR - timedelta(hours=3), last_export=HOUR - timedelta(hours=2), bytes_up=6 * MIB,
        bytes_down=0, shared_steps=0,
    )
    assert found[laptop.pk] == selectors.EngineActivity(
        last_import=HOUR, last_export=None, bytes_up=0, bytes_down=6 * MIB, shared_steps=8
    )
    assert 0 not in found
    assert set(selectors.engine_activity(org, [laptop.pk])) == {laptop.pk}


def test_an_export_known_only_from_a_rolled_up_day_is_dated_by_its_day(org, engines):
    from activity.models import Period
    from tests.activity_rows import add

    builder, laptop = engines
    add(org, "exports_delivered", 2, TODAY - timedelta(days=30), laptop, period=Period.DAY)
    add(org, "imports", 1, TODAY - timedelta(days=30), builder, period=Period.DAY)  # older than its hours
    found = selectors.engine_activity(org)
    assert (found[laptop.pk].last_export, found[laptop.pk].last_export_period) == (TODAY - timedelta(days=30), "day")
    assert (found[builder.pk].last_import, found[builder.pk].last_import_period) == (HOUR - timedelta(hours=3), "hour")


def test_other_organizations_are_not_counted(org, other_org, engines):
    known_activity(other_org)
    win = selectors.window("24h", now=NOW)
    assert selectors.series(org, win).total("download_urls") == 8
    assert selectors.totals(org)["download_urls"] == 48


def test_counts_written_by_record_are_read(org, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        record(org.id, {"shared_steps": 2, "download_urls": 3}, engine_ref=5, at=NOW)
        record(org.id, {"shared_steps": 1}, engine_ref=5, at=NOW - timedelta(minutes=40))
    win = selectors.window("24h", now=NOW)
    found = selectors.series(org, win, ["shared_steps", "download_urls"], engine_ref=5)
    assert nonzero(found.values["shared_steps"], win.starts) == {HOUR: 2, HOUR - timedelta(hours=1): 1}
    assert found.total("download_urls") == 3


def test_chart_bars_carry_the_series_numbers(org, engines):
    win = selectors.window("24h", now=NOW)
    reuse, = [c for c in charts.activity_charts(org, win) if c.key == "reuse"]
    assert len(reuse.bars) == 24 * 2
    tall = [(b.series, b.bucket, b.value, b.height) for b in reuse.bars if b.value]
    assert tall == [("download_urls", HOUR.isoformat(), 8, 80.0), ("shared_steps", HOUR.isoformat(), 5, 50.0)]
    assert reuse.top == 10 and reuse.top_label == "10"
    assert [s["total"] for s in reuse.series] == ["8", "5"]
    assert reuse.rows[-1] == ("Nov 30 14:00", HOUR.isoformat(), ["8", "5"])
    transfer, = [c for c in charts.activity_charts(org, win) if c.key == "bytes"]
    assert transfer.top == 10 * MIB and transfer.top_label == "10.0\xa0MB"


def test_storage_chart_stacks_the_samples(org, engines):
    win = selectors.window("24h", now=NOW)
    chart = charts.storage_chart(org, win)
    assert [(b.series, b.value) for b in chart.bars] == [
        ("layer_bytes", 10 * MIB), ("mount_bytes", 2 * MIB), ("unreferenced_bytes", 0),
        ("layer_bytes", 12 * MIB), ("mount_bytes", 3 * MIB), ("unreferenced_bytes", 1 * MIB),
    ]
    # Stacked: 16 MiB at the top of a 20 MiB scale; each layer sits on the one below.
    last = chart.bars[-3:]
    assert chart.top == 20 * MIB
    assert [b.height for b in last] == [60.0, 15.0, 5.0] and [b.y for b in last] == [40.0, 25.0, 20.0]
    assert [s["total"] for s in chart.series] == ["12.0\xa0MB", "3.0\xa0MB", "1.0\xa0MB"]
    assert chart.rows[0][2] == ["no sample", "no sample", "no sample"]
