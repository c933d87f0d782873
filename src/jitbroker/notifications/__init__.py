"""Notifications: signed webhooks for approvals and break-glass, delivered by Celery workers."""
