"""RLIMIT_AS fallback: no kill, the allocation fails (MemoryError) once the address space hits the cap.

Address space is larger than resident memory (torch maps far more than it touches), so this
cap binds earlier than a cgroup would; it exists for hosts without a usable cgroup.
"""

from __future__ import annotations

import resource

from devices.caps.base import CapBackend, CapReading
from devices.child_env import ENV_RLIMIT_AS


class RlimitAS(CapBackend):
    name = "rlimit"
    kills_on_oom = False

    @classmethod
    def unavailable_reason(cls) -> str | None:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY and hard < (640 << 20):
            return f"the hard RLIMIT_AS ({hard} bytes) is below what torch needs to start"
        return None

    def create(self) -> None:
        pass

    def child_env(self) -> dict[str, str]:
        return {**self.common_env(), ENV_RLIMIT_AS: str(self.profile.memory_bytes)}

    def reading(self) -> CapReading:
        # The peak comes from the child's rusage; the OOM verdict from the workload's MemoryError. The address
        # space counts swapped-out pages too, so swap cannot carry the cell past this cap.
        return CapReading(None, False, self.name, swap_excluded=True)

    def destroy(self) -> None:
        pass
