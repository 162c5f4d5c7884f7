"""Test configuration shared by every suite."""

pytest_plugins = ["tests.ray_fixtures", "tests.skips", "tests.pg", "pytester"]
