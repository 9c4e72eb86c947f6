"""The machine side of a mount, as a strategy `mounts.services` is given: JuiceFS volumes
(mounts/juicefs.py) or local branch directories (LocalMachine, over mounts/local.py).

The services hold what every workspace has in common (the state row, the per-bucket lock, the
mount limit, the guards, forks); what "mounted", "healthy", "durable" and "leased" mean on this
machine is the strategy's. WORKSPACE_MODE names the strategy (services.workspace_machine()).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Protocol

from django.utils import timezone

from mounts import lease, local, steps
from mounts.models import Mount


class Machine(Protocol):
    """What the services ask of the machine; every method of one bucket runs under its lock."""

    # Whether volumes have layouts (files | image) here, and so whether loop devices matter.
    layouts: bool

    def workspace(self, mount: Mount) -> Path:
        """The live workspace of a MOUNTED row; NotMounted (409) when there is none."""
        ...

    def layout_request_check(self, bucket: str, layout: str | None) -> None:
        """Refuse a requested layout this machine cannot serve, before anything is made."""
        ...

    def layout_mounted_check(self, mount: Mount, layout: str | None) -> None:
        """Refuse a requested layout other than the one a healthy mount already has."""
        ...

    def leftovers_clear(self, bucket: str) -> None:
        """Stop what runs for a bucket no row accounts for (a lost state row)."""
        ...

    def lease_take(self, bucket: str, *, force: bool) -> lease.Record | None:
        """The bucket's lease for this machine; the last writer's record (None: no lease)."""
        ...

    def lease_release(self, bucket: str) -> None: ...

    def lease_reconcile(self, mount: Mount) -> tuple[bool, lease.Record | None]:
        """(kept, last writer) for a row found at start-up or by reconcile."""
        ...

    def leases_renew(self) -> dict[str, str]:
        """Renew every lease this machine holds; fence the writers of those lost."""
        ...

    def mount(self, mount: Mount, requested: str | None, *,
              previous: lease.Record | None) -> None:
        """Bring a row in MOUNTING to MOUNTED; on failure leave nothing running."""
        ...

    def healthy(self, mount: Mount) -> bool: ...

    def repair(self, mount: Mount) -> str | None:
        """Reconcile's cheap fix of a mounted row ("ok", "litestream restarted"), or None when
        it must be torn down and mounted again."""
        ...

    def sync(self, mount: Mount) -> datetime:
        """Make every write so far durable in S3; the moment it covers."""
        ...

    def unmount(self, mount: Mount, *, force: bool) -> None:
        """Flush, stop and detach; the row is the caller's."""
        ...


class LocalMachine:
    """Local mode (docs/local-mode.md): "mounted" means the bucket's branch directory is
    restored from S3, present and pinned; S3 is written by rclone, and nothing leases it."""

    layouts = False

    def workspace(self, mount: Mount) -> Path:
        return local.workspace_path(mount.bucket)

    def layout_request_check(self, bucket: str, layout: str | None) -> None:
        return None

    def layout_mounted_check(self, mount: Mount, layout: str | None) -> None:
        return None

    def leftovers_clear(self, bucket: str) -> None:
        return None

    def lease_take(self, bucket: str, *, force: bool) -> lease.Record | None:
        return None

    def lease_release(self, bucket: str) -> None:
        return None

    def lease_reconcile(self, mount: Mount) -> tuple[bool, lease.Record | None]:
        return True, None

    def leases_renew(self) -> dict[str, str]:
        return {}

    def mount(self, mount: Mount, requested: str | None, *,
              previous: lease.Record | None) -> None:
        steps.ensure_bucket(mount.bucket)
        mount.restored = local.branch_open(mount.bucket)
        mount.status, mount.mounted_at, mount.error = Mount.Status.MOUNTED, timezone.now(), ""
        mount.save()

    def healthy(self, mount: Mount) -> bool:
        return mount.status == Mount.Status.MOUNTED and local.branch_healthy(mount.bucket)

    def repair(self, mount: Mount) -> str | None:
        return "ok" if self.healthy(mount) else None

    def sync(self, mount: Mount) -> datetime:
        local.workspace_sync(mount.bucket)
        return timezone.now()

    def unmount(self, mount: Mount, *, force: bool) -> None:
        local.branch_close(mount.bucket)
