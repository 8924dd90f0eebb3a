"""One module per API family; importing this package registers every handler."""
from gateway.api import (  # noqa: F401
    acl,
    attributes,
    bucket,
    copy,
    cors,
    delete,
    encryption,
    lifecycle,
    listing,
    multipart,
    object,
    objectlock,
    policy,
    post_object,
    tagging,
    website,
)
