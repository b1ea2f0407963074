"""Packaging shim: ships the top-level cuda/ kernel sources inside the wheel as gpucnn._cuda.

Everything else about the package lives in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["gpucnn", "gpucnn.*"]) + ["gpucnn._cuda"])
