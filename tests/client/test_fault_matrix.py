"""The fault matrix as a test: every row runs against the fake (the table is in
tests/fault_matrix.py, which also renders it into docs/errors-and-retries.md)."""

from __future__ import annotations

import pytest

from baidu_swan_auth.testing import ENDPOINT_PATH, FakeBaiduServer, Fault

from ..fault_matrix import (
    DOCS_PAGE,
    END_MARKER,
    FAULT_MATRIX,
    START_MARKER,
    TIMES,
    Row,
    check_row,
    describe_steps,
    render_matrix,
    run_row,
)


def _row_id(row: Row) -> str:
    settings = "".join(f" {name}={value:g}" for name, value in row.settings)
    return (describe_steps(row) + settings).replace(TIMES, "x")


@pytest.mark.parametrize("row", FAULT_MATRIX, ids=_row_id)
async def test_fault_matrix(row: Row, fake: FakeBaiduServer) -> None:
    run = await run_row(row, fake)
    check_row(row, run, fake)
    # Redirects are never followed: nothing but the endpoint ever saw a request.
    assert {request.path for request in fake.requests} <= {ENDPOINT_PATH}
    assert all(request.query_string == "" for request in fake.requests)


def test_the_matrix_covers_every_fault_the_fake_has() -> None:
    import baidu_swan_auth.testing as testing  # noqa: PLC0415

    scripted = {type(step) for row in FAULT_MATRIX for step in row.faults}
    every = {
        obj
        for obj in vars(testing).values()
        if isinstance(obj, type) and issubclass(obj, Fault) and obj is not Fault
    }
    # Arbitrary answers are the fuzz test's (client/test_fuzzed_answers.py), not a row's.
    missing = every - scripted - {testing.Arbitrary}
    assert not missing, f"add rows for {sorted(cls.__name__ for cls in missing)}"


def test_the_docs_show_the_matrix() -> None:
    text = DOCS_PAGE.read_text(encoding="utf-8")
    assert text.count(START_MARKER) == 1
    assert text.count(END_MARKER) == 1
    shown = text.split(START_MARKER, 1)[1].split(END_MARKER, 1)[0]
    assert shown == f"\n{render_matrix()}", (
        "docs/errors-and-retries.md shows another fault matrix: run python -m tests.fault_matrix"
    )
