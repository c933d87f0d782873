# One real stack per session (started only when a test asks for it), for integration and e2e alike.
pytest_plugins = ["tests.real_stack"]
