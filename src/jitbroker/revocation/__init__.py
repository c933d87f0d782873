"""Revocation: the expiry ledger, the sweeper, revoke_grant() and the Celery tasks around it."""
