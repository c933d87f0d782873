"""Redis ACL users from OpenBao's database engine with its `redis-database-plugin`.

The plugin creates an ACL user per lease from the role's ACL rules and deletes it (closing its
connections) when the lease is revoked; leases behave exactly like the database engine's.
"""

from __future__ import annotations

from jitbroker.engines.database import DatabaseEngine


class RedisAclEngine(DatabaseEngine):
    """Reads `<mount>/creds/<role>` from a Redis connection and renews to the grant TTL."""

    kind = "redis"
