#!/bin/sh
# Runs under `jitbroker exec`: PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD and DATABASE_URL
# hold the task's credential; it stops working when this script exits.
set -eu
psql -v ON_ERROR_STOP=1 -f migrations/latest.sql
