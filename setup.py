"""The compiled part of notifier; everything else is in pyproject.toml.

notifier's hot loops (`notifier/_speedups.c`, issue #12) are optional: without a C compiler
the install still works and their Python twins run (`notifier.speedups.native` is then None).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "notifier._speedups",
            sources=["notifier/_speedups.c"],
            optional=True,
        )
    ]
)
