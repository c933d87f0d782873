"""Workloads at runtime: suspend and resume (the kill switch), revoke by selector."""
