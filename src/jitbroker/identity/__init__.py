"""Workload and human identity: JWKS, token verification, binding to registered workloads."""
