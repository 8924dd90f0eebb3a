"""One module per API family; importing this package registers every handler."""
from gateway.api import (bucket, copy, delete, listing, multipart, object, object_versions, post_object,  # noqa: F401
                         tagging)
