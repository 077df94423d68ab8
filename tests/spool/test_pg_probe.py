"""check-config's verdict on a reachable database, decided without a server."""

from __future__ import annotations

from notifier.spool.pg import schema
from notifier.spool.pg.probe import report

WHERE = "db.example.com:5432/notifier"
LATEST = schema.LATEST


def test_a_database_at_this_notifiers_version_is_reported_with_both_versions() -> None:
    verdict = report(WHERE, LATEST)

    assert verdict.problem == ""
    assert verdict.line() == (
        f"reachable at {WHERE}, schema version {LATEST} (this notifier: {LATEST})"
    )


def test_an_older_schema_is_reported_as_migrated_at_start() -> None:
    verdict = report(WHERE, LATEST - 1)

    assert verdict.problem == ""
    assert f"schema version {LATEST - 1}, migrated at start" in verdict.line()


def test_an_empty_database_gets_its_schema_at_start() -> None:
    verdict = report(WHERE, None)

    assert verdict.problem == ""
    assert "no schema yet: schema will be created at start" in verdict.line()


def test_a_newer_schema_is_a_problem_naming_the_database_and_both_versions() -> None:
    verdict = report(WHERE, LATEST + 1)

    assert verdict.problem == (
        f"PostgreSQL at {WHERE}: database schema version {LATEST + 1} is newer than this "
        f"notifier's ({LATEST}): upgrade this notifier, or point it at another database"
    )
