"""The audit trail: every authentication failure, decision, issuance and revocation, never a secret."""
