"""Shared pytest configuration."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: slow test on real data (opt in with POF_SLOW=1)"
    )
