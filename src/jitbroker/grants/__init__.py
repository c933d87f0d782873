"""Grants: a decided, issued and eventually revoked credential within a task."""
