"""One definition of a failed record: the record, its JSON, the history's SQL and the run agree."""

from __future__ import annotations

import itertools
import json
import sqlite3

import pytest

from runner.history import FAILED_JSON, is_failure
from runner.records import ActionRecord, Delivery, FeedbackStatus, SceneRun

DELIVERIES: list[Delivery | None] = [None, *Delivery]
# Written out, not derived: what counts as a failure is part of the contract.
FAILING_FEEDBACK = {"ERROR", "TIMEOUT"}
UNDELIVERED = {"failed", "not sent"}


def record(delivery: Delivery | None, feedback: FeedbackStatus) -> ActionRecord:
    return ActionRecord(index=0, round=0, planned=0.0, topic="room1/a", message="ON",
                        route="mqtt", delivery=delivery, feedback=feedback)


@pytest.mark.parametrize(("delivery", "feedback"),
                         list(itertools.product(DELIVERIES, FeedbackStatus)))
def test_failed_is_bad_feedback_or_not_delivered(delivery: Delivery | None,
                                                 feedback: FeedbackStatus) -> None:
    rec = record(delivery, feedback)
    expected = feedback.value in FAILING_FEEDBACK or (
        delivery is not None and delivery.value in UNDELIVERED)
    assert rec.failed is expected
    assert rec.undelivered is (delivery is not None and delivery.value in UNDELIVERED)
    assert is_failure(rec.to_json()) is expected  # the JSON the history keeps
    conn = sqlite3.connect(":memory:")
    try:
        (sql,) = conn.execute(f"SELECT {FAILED_JSON} FROM (SELECT ? AS record)",
                              (json.dumps(rec.to_json()),)).fetchone()
    finally:
        conn.close()
    assert bool(sql) is expected  # the history's SQL form, for files from before the column


def test_a_run_lists_exactly_its_failed_records() -> None:
    recs = [record(d, f) for d, f in itertools.product(DELIVERIES, FeedbackStatus)]
    run = SceneRun(run_id="r", scene_id="s", scene_name="S", trigger="test", started_at=0.0,
                   duration=1.0, records=recs)
    assert run.failures == [r for r in recs if r.failed]
    assert len(run.failures) == sum(
        f.value in FAILING_FEEDBACK or (d is not None and d.value in UNDELIVERED)
        for d, f in itertools.product(DELIVERIES, FeedbackStatus))
