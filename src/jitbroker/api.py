"""Gathers the domain routers under /v1."""

from __future__ import annotations

from fastapi import APIRouter

from jitbroker.approvals.endpoints import router as approvals_router
from jitbroker.audit.endpoints import router as audit_router
from jitbroker.grants.endpoints import router as grants_router
from jitbroker.inventory.endpoints import router as inventory_router
from jitbroker.revocation.endpoints import router as revocation_router
from jitbroker.routes.endpoints import router as routes_router
from jitbroker.tasks.endpoints import router as tasks_router
from jitbroker.workloads.endpoints import router as workloads_router

v1 = APIRouter(prefix="/v1")
v1.include_router(tasks_router)
v1.include_router(grants_router)
v1.include_router(approvals_router)
v1.include_router(workloads_router)
v1.include_router(inventory_router)
v1.include_router(revocation_router)
v1.include_router(routes_router)
v1.include_router(audit_router)
