"""Errors of the metadata layer, shaped like Arsenal's (type, HTTP code, description).

They travel over the RPC flattened as
`{"is_arsenal_error": true, "code": 404, "description": ..., "type": "ObjNotFound"}`
and are rebuilt on the client side into the same class.
"""
from __future__ import annotations


class MetadataError(Exception):
    def __init__(self, type_: str, code: int = 500, description: str = ""):
        self.type = type_
        self.code = code
        self.description = description or type_
        super().__init__(f"{type_}: {self.description}")

    def to_wire(self) -> dict:
        return {"is_arsenal_error": True, "code": self.code, "description": self.description,
                "type": self.type, "message": self.type, self.type: True}

    @classmethod
    def from_wire(cls, err: object) -> "MetadataError":
        if isinstance(err, dict):
            type_ = err.get("type") or err.get("message") or "InternalError"
            code = err.get("code")
            return cls(str(type_), code if isinstance(code, int) else 500, str(err.get("description") or err.get("info") or type_))
        return cls("InternalError", 500, str(err))


def obj_not_found(description: str = "This object does not exist") -> MetadataError:
    return MetadataError("ObjNotFound", 404, description)


def invalid_argument(description: str) -> MetadataError:
    return MetadataError("InvalidArgument", 400, description)


# Our extension (docs/protocol.md#conditional-writes): a put/del condition that did not hold.
PRECONDITION_FAILED = "PreconditionFailed"


def precondition_failed(description: str) -> MetadataError:
    return MetadataError(PRECONDITION_FAILED, 412, description)
