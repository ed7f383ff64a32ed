"""Shared pytest configuration."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: slow test on real data (opt in with POF_SLOW=1)"
    )
    config.addinivalue_line(
        "markers", "bench: checks of the benchmark scripts and end-to-end runs (run by default; "
        "-m 'not bench' leaves them out)"
    )
