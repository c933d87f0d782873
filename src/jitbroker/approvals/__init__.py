"""Approvals: people decide on elevated grants (quorum, separation of duties, break-glass)."""
