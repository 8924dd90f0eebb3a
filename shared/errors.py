"""The S3 error catalogue: code -> (HTTP status, message), as AWS documents it.

Errors are raised as `S3Error("NoSuchKey")` at the point of failure and
rendered to XML in one place (gateway/app.py).
"""
from __future__ import annotations

_CATALOGUE: dict[str, tuple[int, str]] = {
    "AccessDenied": (403, "Access Denied"),
    "AccessControlListNotSupported": (400, "The bucket does not allow ACLs"),
    "InvalidBucketAclWithObjectOwnership": (400, "Bucket cannot have ACLs set with ObjectOwnership's BucketOwnerEnforced setting"),
    "UnresolvableGrantByEmailAddress": (400, "The email address you provided does not match any account on record."),
    "NoSuchPublicAccessBlockConfiguration": (404, "The public access block configuration was not found"),
    "OwnershipControlsNotFoundError": (404, "The bucket ownership controls were not found"),
    "AccountProblem": (403, "There is a problem with your AWS account that prevents the operation from completing successfully."),
    "AuthorizationHeaderMalformed": (400, "The authorization header is malformed."),
    "AuthorizationQueryParametersError": (400, "Error parsing the X-Amz-Credential parameter."),
    "BadRequest": (400, "Bad Request"),
    "BadDigest": (400, "The Content-MD5 you specified did not match what we received."),
    "BucketAlreadyExists": (409, "The requested bucket name is not available. The bucket namespace is shared by all users of the system. Please select a different name and try again."),
    "BucketAlreadyOwnedByYou": (409, "Your previous request to create the named bucket succeeded and you already own it."),
    "BucketNotEmpty": (409, "The bucket you tried to delete is not empty."),
    "ConditionalRequestConflict": (409, "The conditional request cannot succeed due to a conflicting operation against this resource."),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed object size."),
    "EntityTooSmall": (400, "Your proposed upload is smaller than the minimum allowed object size."),
    "ExpiredToken": (400, "The provided token has expired."),
    "IllegalLocationConstraintException": (400, "The unspecified location constraint is incompatible for the region specific endpoint this request was sent to."),
    "IllegalVersioningConfigurationException": (400, "The versioning configuration specified in the request is invalid."),
    "IncompleteBody": (400, "You did not provide the number of bytes specified by the Content-Length HTTP header."),
    "InsufficientStorage": (507, "There is not enough free space on the storage to complete the request. Delete data or try again later."),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidAccessKeyId": (403, "The AWS access key Id you provided does not exist in our records."),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "InvalidBucketState": (409, "The request is not valid with the current state of the bucket."),
    "InvalidDigest": (400, "The Content-MD5 you specified is not valid."),
    "InvalidLocationConstraint": (400, "The specified location constraint is not valid."),
    "InvalidObjectState": (403, "The operation is not valid for the current state of the object."),
    "InvalidPart": (400, "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag."),
    "InvalidPartOrder": (400, "The list of parts was not in ascending order. The parts list must be specified in order by part number."),
    "InvalidPartNumber": (416, "The requested partnumber is not satisfiable"),
    "InvalidPolicyDocument": (400, "The content of the form does not meet the conditions specified in the policy document."),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRequest": (400, "Invalid Request"),
    "InvalidStorageClass": (400, "The storage class you specified is not valid."),
    "InvalidTag": (400, "The tag provided was not a valid tag."),
    "InvalidURI": (400, "Couldn't parse the specified URI."),
    "KeyTooLongError": (400, "Your key is too long."),
    "MalformedACLError": (400, "The XML you provided was not well-formed or did not validate against our published schema."),
    "MalformedPolicy": (400, "Policies must be valid JSON and the first byte must be '{'"),
    "MalformedPOSTRequest": (400, "The body of your POST request is not well-formed multipart/form-data."),
    "MalformedXML": (400, "The XML you provided was not well-formed or did not validate against our published schema."),
    "MaxMessageLengthExceeded": (400, "Your request was too big."),
    "MetadataTooLarge": (400, "Your metadata headers exceed the maximum allowed metadata size."),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header."),
    "MissingRequestBodyError": (400, "Request Body is empty"),
    "MissingSecurityHeader": (400, "Your request was missing a required header"),
    "NoSuchBucket": (404, "The specified bucket does not exist."),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchUpload": (404, "The specified multipart upload does not exist. The upload ID might be invalid, or the multipart upload might have been aborted or completed."),
    "NoSuchVersion": (404, "Indicates that the version ID specified in the request does not match an existing version."),
    "NoSuchBucketPolicy": (404, "The specified bucket does not have a bucket policy."),
    "NoSuchCORSConfiguration": (404, "The CORS configuration does not exist"),
    "NoSuchLifecycleConfiguration": (404, "The lifecycle configuration does not exist."),
    "ObjectLockConfigurationNotFoundError": (404, "Object Lock configuration does not exist for this bucket"),
    "NoSuchObjectLockConfiguration": (404, "The specified object does not have a ObjectLock configuration"),
    "NoSuchTagSet": (404, "The TagSet does not exist."),
    "NoSuchWebsiteConfiguration": (404, "The specified bucket does not have a website configuration"),
    "NotImplemented": (501, "A header you provided implies functionality that is not implemented."),
    "NotModified": (304, "Not Modified"),
    "PreconditionFailed": (412, "At least one of the preconditions you specified did not hold."),
    "RequestHeaderSectionTooLarge": (400, "Your request header section exceeds the maximum allowed size."),
    "RequestTimeTooSkewed": (403, "The difference between the request time and the server's time is too large."),
    "RequestTimeout": (400, "Your socket connection to the server was not read from or written to within the timeout period."),
    "ServiceUnavailable": (503, "Reduce your request rate."),
    "SignatureDoesNotMatch": (403, "The request signature we calculated does not match the signature you provided. Check your key and signing method."),
    "SlowDown": (503, "Reduce your request rate."),
    "TooManyBuckets": (400, "You have attempted to create more buckets than allowed."),
    "UnexpectedContent": (400, "This request does not support content."),
    "XAmzContentSHA256Mismatch": (400, "The provided 'x-amz-content-sha256' header does not match what was computed."),
    "InvalidEncryptionAlgorithmError": (400, "The encryption request you specified is not valid. The valid value is AES256."),
    # Encryption at rest (gateway/sse.py)
    "ServerSideEncryptionConfigurationNotFoundError": (404, "The server side encryption configuration was not found"),
    "KMS.NotFoundException": (400, "Invalid keyId"),
    "InvalidChunkSizeError": (403, "Only the last chunk is allowed to have a size less than 8192 bytes"),
    "IncorrectNumberOfFilesInPostRequest": (400, "POST requires exactly one file upload per request."),
    # CORS and website hosting (issue 14)
    "AccessForbidden": (403, "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec."),
    "InvalidRedirectLocation": (400, "The website redirect location must have a prefix of 'http://' or 'https://' or '/'."),
}


class S3Error(Exception):
    """An S3 error response. `extra` adds elements to the XML body (e.g. BucketName)."""

    def __init__(self, code: str, message: str | None = None, *, status: int | None = None,
                 headers: dict[str, str] | None = None, **extra: str):
        if code not in _CATALOGUE and status is None:
            raise ValueError(f"unknown S3 error code {code}")
        default_status, default_message = _CATALOGUE.get(code, (status or 500, code))
        self.code = code
        self.status = status or default_status
        self.message = message or default_message
        self.headers = headers or {}
        self.extra = extra
        super().__init__(f"{code}: {self.message}")


def error_status(code: str) -> int:
    return _CATALOGUE[code][0]


def known_error_codes() -> frozenset[str]:
    return frozenset(_CATALOGUE)
