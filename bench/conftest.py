# The benchmarks run on the same real stack as the integration tests.
pytest_plugins = ["tests.real_stack"]
