"""The approver web page: server-rendered HTML forms over the approvals service."""
