"""The call table's Notes filter (``CallTable(keep_note=...)``): a table told not to keep some
levels returns what a table keeping every Note returns, but for Notes of those levels (which
it may leave out: the edge would not log them), over whole calls (offer, reservation, answer,
end, a failed reservation or configuration)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pcscf.calls import AnswerWork, CallTable, MediaDone, Note, NoteLevel, OfferWork, agw_error
from pcscf.policy import Policy
from pcscf.sip.media import DialogId
from tests.pcscf.test_calls import core_answer, ctx, reply_for, ue_offer

LEVELS: tuple[NoteLevel, ...] = ("debug", "info", "warn", "error")


def _call(table: CallTable, n: int, fail: str, bypass: bool) -> list[Any]:
    """One call through the table; every value it returned, in order."""
    dialog = DialogId(f"call-{n}", "orig")
    out: list[Any] = []
    work = table.offer(ctx("offer", True, dialog), ue_offer(), ["<agw1>"], 0.0)
    out.append(work)
    assert isinstance(work, OfferWork) and work.reserve is not None
    if fail == "reserve":
        out.append(table.offer_failed(work, agw_error("timeout"), 0.0))
    else:
        out.append(table.offer_reserved(work, reply_for(work.reserve.request, 7 + n), 0.0))
        answer = table.answer(ctx("answer", False, dialog), core_answer(), 0.0)
        out.append(answer)
        if isinstance(answer, AnswerWork):
            if fail == "configure":
                out.append(table.answer_failed(answer, agw_error("lost"), 0.0, forwarded=True))
            else:
                out.append(table.answer_configured(answer, 0.0))
    out.append(table.ended(dialog, "BYE"))
    return out


def _actions(values: list[Any]) -> list[Any]:
    actions: list[Any] = []
    for v in values:
        if isinstance(v, MediaDone):
            actions.append(v.result)
            actions.extend(v.actions)
        elif isinstance(v, list):
            actions.extend(v)
        else:
            actions.append(v)
    return actions


@settings(max_examples=60, deadline=None)
@given(
    dropped=st.sets(st.sampled_from(LEVELS)),
    calls=st.lists(
        st.tuples(st.sampled_from(("", "reserve", "configure")), st.booleans()),
        min_size=1,
        max_size=4,
    ),
)
def test_a_table_without_some_notes_differs_only_by_those_notes(
    dropped: set[NoteLevel], calls: list[tuple[str, bool]]
) -> None:
    for fail, bypass in calls:
        policy = Policy(on_agw_failure="bypass") if bypass else Policy()
        every = CallTable(policy)
        some = CallTable(policy, keep_note=lambda level: level not in dropped)
        for n in range(2):
            want = _actions(_call(every, n, fail, bypass))
            got = _actions(_call(some, n, fail, bypass))

            def logged(actions: list[Any]) -> list[str]:
                return [
                    repr(a) for a in actions if not (isinstance(a, Note) and a.level in dropped)
                ]

            # (values built from the same calls compare equal, the bodies included)
            assert logged(got) == logged(want)
            assert len(got) <= len(want)
        assert every.held() == some.held() == {}


def test_the_info_notes_of_a_call_are_the_ones_filtered() -> None:
    every = _actions(_call(CallTable(Policy()), 0, "", False))
    quiet = _actions(
        _call(CallTable(Policy(), keep_note=lambda level: level != "info"), 0, "", False)
    )
    infos = [a for a in every if isinstance(a, Note) and a.level == "info"]
    assert len(infos) >= 2  # (reserved streams, releasing the context)
    assert len(every) - len(quiet) == len(infos)
