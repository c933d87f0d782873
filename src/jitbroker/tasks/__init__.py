"""Tasks: the unit of work a credential is bound to (purpose, deadline, owning workload)."""
