"""The workload inventory: owners, environments, privilege, production sign-off, access reviews."""
