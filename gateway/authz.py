"""Authorization: may this account perform a routed action on this bucket?

Called once per request by the pipeline (gateway/app.py) with the route's
access level, and by the copy actions for their source bucket. Today's rule is
the owner's: every action on a bucket and its objects needs the bucket's
owner; anonymous requests are denied. ACLs and bucket policies replace the body
of `authorize`, not its callers.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.models import BucketMD
from shared.config import Account
from shared.errors import S3Error

if TYPE_CHECKING:
    from gateway.router import Access


def authorize(account: Account | None, bucket: BucketMD, access: "Access") -> None:
    """AccessDenied unless `account` may act on `bucket` at level `access` (read, write, owner)."""
    if account is None or bucket.owner != account.canonical_id:
        raise S3Error("AccessDenied")
