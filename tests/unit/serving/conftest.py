"""Fixtures shared with the training tests."""

from tests.unit.training.conftest import churn_project  # noqa: F401 - a fixture
