"""Compute the package list for the mapped folders; all other metadata is in pyproject.toml.

setuptools cannot discover packages under a custom package-dir prefix, and a static list
would silently leave a new plugin folder out of the wheel, so the list is derived here.
"""

from setuptools import find_packages, setup

packages = ["bmslogger", "bmslogger.plugins", "bmslogger.sinks"]
packages += ["bmslogger." + p for p in find_packages(where="bmslogger")]
packages += [
    "bmslogger.plugins." + p for p in find_packages(where="plugins") if not p.startswith("_")
]
packages += ["bmslogger.sinks." + p for p in find_packages(where="sinks")]

setup(packages=packages)
