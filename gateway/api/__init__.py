"""One module per API family; importing this package registers every handler."""
from gateway.api import (  # noqa: F401
    attributes,
    bucket,
    copy,
    delete,
    listing,
    multipart,
    object,
    post_object,
    tagging,
)
