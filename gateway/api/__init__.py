"""One module per API family; importing this package registers every handler."""
from gateway.api import bucket, copy, listing, multipart, object, object_versions, tagging  # noqa: F401
