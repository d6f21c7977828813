"""The package list: found, not written by hand (metadata and data files: pyproject.toml)."""

from setuptools import find_packages, setup

# Every package under runner/, plus the three top-level folders shipped inside it
# (their places: package-dir in pyproject.toml).
MAPPED = ["runner.schemas", "runner.example_scenes", "runner.example_media"]

setup(packages=find_packages(include=["runner", "runner.*"]) + MAPPED)
