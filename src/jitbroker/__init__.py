"""jitbroker: just-in-time credentials for non-human identities, bound to a task."""

__version__ = "0.1.0"
