"""The batch state file: replaying events, deciding what a rerun does, surviving a torn line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.batch_state import Action, BatchState, StateLocked, SubjectRecord, fold_events, plan_subject


def ev(event: str, subject: str = "ann", **fields) -> dict:
    return {"event": event, "subject": subject, **fields}


@pytest.fixture()
def glb(tmp_path: Path) -> Path:
    return tmp_path / "ann.glb"


def record(*events: dict) -> SubjectRecord:
    return fold_events(list(events))["ann"]


def test_new_subject_is_submitted(glb: Path) -> None:
    assert plan_subject(None, "d1", glb).action is Action.SUBMIT


def test_key_without_answer_is_resent_with_the_same_key(glb: Path) -> None:
    plan = plan_subject(record(ev("submitting", key="k1", inputs="d1")), "d1", glb)
    assert (plan.action, plan.key) == (Action.RESUBMIT_SAME_KEY, "k1")


def test_accepted_subject_is_polled_by_its_id(glb: Path) -> None:
    plan = plan_subject(record(ev("submitting", key="k1", inputs="d1"), ev("accepted", key="k1", avatarId="A")),
                        "d1", glb)
    assert (plan.action, plan.avatar_id, plan.key) == (Action.POLL, "A", "k1")


def test_completed_with_glb_is_skipped_and_without_it_downloaded(glb: Path) -> None:
    done = record(ev("submitting", key="k1", inputs="d1"), ev("accepted", key="k1", avatarId="A"),
                  ev("completed", avatarId="A", glb=str(glb)))
    assert plan_subject(done, "d1", glb).action is Action.DOWNLOAD
    glb.write_bytes(b"glTF")
    assert plan_subject(done, "d1", glb).action is Action.SKIP
    assert done.status == "completed"


def test_permanent_failures_are_skipped_transient_ones_retried(glb: Path) -> None:
    base = [ev("submitting", key="k1", inputs="d1"), ev("accepted", key="k1", avatarId="A")]
    no_face = record(*base, ev("failed", avatarId="A", code="no_face", message="front: no face found",
                               permanent=True))
    assert plan_subject(no_face, "d1", glb).action is Action.SKIP
    assert plan_subject(no_face, "d1", glb, retry_failed=True).action is Action.SUBMIT
    crashed = record(*base, ev("failed", avatarId="A", code="internal_error", message="x", permanent=False))
    plan = plan_subject(crashed, "d1", glb)
    assert plan.action is Action.SUBMIT and plan.key is None  # a new key: the old one names the failed job


def test_changed_photos_are_made_again_under_a_new_key(glb: Path) -> None:
    glb.write_bytes(b"glTF")
    done = record(ev("submitting", key="k1", inputs="old"), ev("accepted", key="k1", avatarId="A"),
                  ev("completed", avatarId="A"))
    plan = plan_subject(done, "new", glb)
    assert plan.action is Action.SUBMIT and plan.reason == "photos changed since the last run"


def test_a_new_submission_starts_the_record_over() -> None:
    rec = record(ev("submitting", key="k1", inputs="d1"), ev("accepted", key="k1", avatarId="A"),
                 ev("failed", avatarId="A", code="timeout", permanent=False),
                 ev("submitting", key="k2", inputs="d1"),
                 ev("accepted", key="k1", avatarId="stale"))  # a late line for the old key is ignored
    assert (rec.key, rec.avatar_id, rec.outcome, rec.submissions) == ("k2", None, None, 2)
    assert rec.status == "submitting"


def test_state_file_appends_durably_and_ignores_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "out" / "state.jsonl"
    state = BatchState(path)
    assert state.open() == {}
    state.append("submitting", "zoë", key="k1", inputs="d1")
    state.append("accepted", "zoë", key="k1", avatarId="A")
    state.close()
    # A crash in the middle of a write leaves half a line without its newline.
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"event":"completed","subject":"zo')

    state = BatchState(path)
    records = state.open()
    assert records["zoë"].status == "accepted" and records["zoë"].avatar_id == "A"
    state.append("completed", "zoë", avatarId="A")
    state.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[-1])["event"] == "completed"  # on its own line, after the torn one
    assert BatchState(path).open()["zoë"].status == "completed"


def test_two_batches_cannot_share_a_state_file(tmp_path: Path) -> None:
    first = BatchState(tmp_path / "state.jsonl")
    first.open()
    try:
        with pytest.raises(StateLocked, match="another batch"):
            BatchState(tmp_path / "state.jsonl").open()
    finally:
        first.close()
    second = BatchState(tmp_path / "state.jsonl")
    second.open()
    second.close()
