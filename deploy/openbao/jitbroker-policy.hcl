# jitbroker: the least-privilege OpenBao/Vault policy for the broker's own token.
# Generated from the profiles of a configuration directory by
#   jitbroker openbao policy --config DIR > jitbroker-policy.hcl
# Regenerate it whenever a profile's engine, mount or roles change, and load it with
#   bao policy write jitbroker jitbroker-policy.hcl

# issue dynamic credentials (demo-db, orders-prod-db)
path "database/creds/demo-ro" {
  capabilities = ["read"]
}

# doctor checks the role's TTLs (demo-db, orders-prod-db)
path "database/roles/demo-ro" {
  capabilities = ["read"]
}

# set the lease TTL to the grant TTL (demo-db, orders-prod-db)
path "sys/leases/renew/database/creds/demo-ro/*" {
  capabilities = ["update"]
}

# revoke leases (demo-db, orders-prod-db)
path "sys/leases/revoke/database/creds/demo-ro/*" {
  capabilities = ["update"]
}

# the reconciler lists the role's leases (demo-db, orders-prod-db)
path "sys/leases/lookup/database/creds/demo-ro/" {
  capabilities = ["list", "sudo"]
}

# issue dynamic credentials (demo-db)
path "database/creds/demo-rw" {
  capabilities = ["read"]
}

# doctor checks the role's TTLs (demo-db)
path "database/roles/demo-rw" {
  capabilities = ["read"]
}

# set the lease TTL to the grant TTL (demo-db)
path "sys/leases/renew/database/creds/demo-rw/*" {
  capabilities = ["update"]
}

# revoke leases (demo-db)
path "sys/leases/revoke/database/creds/demo-rw/*" {
  capabilities = ["update"]
}

# the reconciler lists the role's leases (demo-db)
path "sys/leases/lookup/database/creds/demo-rw/" {
  capabilities = ["list", "sudo"]
}

# issue dynamic credentials (demo-db)
path "database/creds/demo-admin" {
  capabilities = ["read"]
}

# doctor checks the role's TTLs (demo-db)
path "database/roles/demo-admin" {
  capabilities = ["read"]
}

# set the lease TTL to the grant TTL (demo-db)
path "sys/leases/renew/database/creds/demo-admin/*" {
  capabilities = ["update"]
}

# revoke leases (demo-db)
path "sys/leases/revoke/database/creds/demo-admin/*" {
  capabilities = ["update"]
}

# the reconciler lists the role's leases (demo-db)
path "sys/leases/lookup/database/creds/demo-admin/" {
  capabilities = ["list", "sudo"]
}

# issue certificates (demo-pki)
path "pki/issue/demo-client" {
  capabilities = ["update"]
}

# revoke certificates by serial number (demo-pki)
path "pki/revoke" {
  capabilities = ["update"]
}

# check a certificate's revocation and the CRL (demo-pki)
path "pki/cert/*" {
  capabilities = ["read"]
}

# doctor checks the role's TTLs (demo-pki)
path "pki/roles/demo-client" {
  capabilities = ["read"]
}

# issue dynamic credentials (demo-redis)
path "redis/creds/demo-redis-ro" {
  capabilities = ["read"]
}

# doctor checks the role's TTLs (demo-redis)
path "redis/roles/demo-redis-ro" {
  capabilities = ["read"]
}

# set the lease TTL to the grant TTL (demo-redis)
path "sys/leases/renew/redis/creds/demo-redis-ro/*" {
  capabilities = ["update"]
}

# revoke leases (demo-redis)
path "sys/leases/revoke/redis/creds/demo-redis-ro/*" {
  capabilities = ["update"]
}

# the reconciler lists the role's leases (demo-redis)
path "sys/leases/lookup/redis/creds/demo-redis-ro/" {
  capabilities = ["list", "sudo"]
}

# issue dynamic credentials (demo-redis)
path "redis/creds/demo-redis-rw" {
  capabilities = ["read"]
}

# doctor checks the role's TTLs (demo-redis)
path "redis/roles/demo-redis-rw" {
  capabilities = ["read"]
}

# set the lease TTL to the grant TTL (demo-redis)
path "sys/leases/renew/redis/creds/demo-redis-rw/*" {
  capabilities = ["update"]
}

# revoke leases (demo-redis)
path "sys/leases/revoke/redis/creds/demo-redis-rw/*" {
  capabilities = ["update"]
}

# the reconciler lists the role's leases (demo-redis)
path "sys/leases/lookup/redis/creds/demo-redis-rw/" {
  capabilities = ["list", "sudo"]
}

# sign SSH certificates (demo-ssh)
path "ssh/sign/demo-ssh-self" {
  capabilities = ["update"]
}

# doctor checks the role's TTLs (demo-ssh)
path "ssh/roles/demo-ssh-self" {
  capabilities = ["read"]
}

# sign SSH certificates (demo-ssh)
path "ssh/sign/demo-ssh-deploy" {
  capabilities = ["update"]
}

# doctor checks the role's TTLs (demo-ssh)
path "ssh/roles/demo-ssh-deploy" {
  capabilities = ["read"]
}

# create tokens from the token role (demo-token)
path "auth/token/create/demo-kv-read" {
  capabilities = ["update"]
}

# doctor checks the role's TTLs (demo-token)
path "auth/token/roles/demo-kv-read" {
  capabilities = ["read"]
}

# check a lease is gone after revoking it
path "sys/leases/lookup" {
  capabilities = ["update"]
}

# check an issued token is gone
path "auth/token/lookup-accessor" {
  capabilities = ["update"]
}

# revoke issued tokens
path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}

# readiness: the broker's token is valid
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

# the broker renews its own token
path "auth/token/renew-self" {
  capabilities = ["update"]
}

# jitbroker doctor checks this policy
path "sys/capabilities-self" {
  capabilities = ["update"]
}
