"""The compiled part of notifier; everything else is in pyproject.toml.

The RFC 3164 batch reader (issue #12) is optional: without a C compiler the install still
works and the Python reader is used (`notifier.ingest.parse.syslog._native` is then None).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "notifier.ingest.parse._fast3164",
            sources=["notifier/ingest/parse/_fast3164.c"],
            optional=True,
        )
    ]
)
