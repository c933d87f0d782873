"""The audit trail: every failure, decision, issuance and revocation; never a secret."""
