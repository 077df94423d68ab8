"""One root exception per package: a caller catches the package's errors with one `except`,
and a full spool is a spool error (`SpoolFull` is a `SpoolError`)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from notifier.dispatch.errors import DispatchError
from notifier.mail.transport import MailError
from notifier.oauth2.errors import OAuth2Error
from notifier.spool.base import SpoolError, SpoolFull

ROOTS: dict[str, type[Exception]] = {
    "notifier.spool": SpoolError,
    "notifier.mail": MailError,
    "notifier.oauth2": OAuth2Error,
    "notifier.dispatch": DispatchError,
}


def exceptions_defined_in(package: str) -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    path = importlib.import_module(package).__path__
    for info in pkgutil.walk_packages(path, prefix=f"{package}."):
        module = importlib.import_module(info.name)
        found += [
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, BaseException) and cls.__module__ == module.__name__
        ]
    return found


@pytest.mark.parametrize("package", sorted(ROOTS))
def test_every_error_of_a_package_derives_from_its_root(package: str) -> None:
    root = ROOTS[package]
    strays = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in exceptions_defined_in(package)
        if not issubclass(cls, root)
    ]
    assert strays == [], f"not a {root.__name__}"


def test_a_full_spool_is_a_spool_error() -> None:
    with pytest.raises(SpoolError) as caught:
        raise SpoolFull("queue full: 10 of 10 entries", retry_after_s=5)
    assert caught.value.retry_after_s == 5  # type: ignore[attr-defined]
