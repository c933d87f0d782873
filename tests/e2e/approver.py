"""A DBA in a background thread, approving through the API while a workload waits."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx


@dataclass
class Approver:
    """A DBA who approves the first demo-db request that shows up in their queue."""

    live_url: str
    token: str
    approved: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def approve_first_request(self, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.live_url, headers=headers, timeout=10) as client:
            while time.monotonic() < deadline:
                waiting = [
                    i for i in client.get("/v1/approvals").json() if i["profile"] == "demo-db"
                ]
                if waiting:
                    grant_id = waiting[0]["grant_id"]
                    response = client.post(
                        f"/v1/grants/{grant_id}/approve", json={"comment": "index reviewed"}
                    )
                    if response.status_code != 200:
                        self.errors.append(response.text)
                    self.approved.append(grant_id)
                    return
                time.sleep(0.1)  # polling the queue, bounded by the deadline
        self.errors.append(f"no demo-db request to approve within {timeout}s")
