"""Root conftest: the cluster fixtures (tests/fixtures.py) serve tests/ and e2e/tests/ alike."""

pytest_plugins = ("tests.fixtures",)
