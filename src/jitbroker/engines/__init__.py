"""OpenBao secrets engines behind one small interface: issue, revoke, is_revoked."""
