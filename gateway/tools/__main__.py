"""Operator tools (`python -m gateway.tools <command> --help`):

  create-encrypted-bucket  create a bucket whose objects are all encrypted at rest: the Python
                           equivalent of the reference's bin/create_encrypted_bucket.js (a signed
                           CreateBucket carrying x-amz-scal-server-side-encryption)
  kms-create-key           add a master key to the file KMS (prints its id)
  kms-list-keys            list the file KMS's key ids (the default one marked)
  migrate-metadata         copy a dmd's metadata to PostgreSQL (--from dmd --to postgres; data stays)
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import ssl
import sys
from urllib.parse import quote

from gateway.data.aws_s3 import Credentials, sign_v4
from gateway.kms import DEFAULT_KEY_FILE, KEY_SUFFIX, FileKMS, kms_path
from shared.config import Config, load_config

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def create_encrypted_bucket(args: argparse.Namespace) -> int:
    body = b""
    if args.location:
        body = (f'<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<LocationConstraint>{args.location}</LocationConstraint></CreateBucketConfiguration>").encode()
    headers = {"x-amz-scal-server-side-encryption": args.algorithm}
    if args.kms_key_id:
        headers["x-amz-scal-server-side-encryption-aws-kms-key-id"] = args.kms_key_id
    if body:
        headers["content-length"] = str(len(body))
    host = f"{args.host}:{args.port}"
    path = "/" + quote(args.bucket, safe="")
    signed = sign_v4(Credentials(args.access_key, args.secret_key), args.region, "PUT", host, path, [], headers,
                     hashlib.sha256(body).hexdigest())
    if args.https:
        context = ssl.create_default_context()
        if args.insecure:
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(args.host, args.port, context=context,
                                                                       timeout=30)
    else:
        conn = http.client.HTTPConnection(args.host, args.port, timeout=30)
    try:
        conn.request("PUT", path, body=body, headers=signed)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
    except OSError as exc:
        print(f"cannot reach {host}: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    if resp.status != 200:
        print(f"CreateBucket failed: {resp.status} {text}", file=sys.stderr)
        return 1
    print(f"bucket {args.bucket} created, objects encrypted with {args.algorithm}")
    return 0


def _kms(args: argparse.Namespace) -> FileKMS:
    if args.kms_path:
        return FileKMS(args.kms_path)
    return FileKMS(kms_path(_config()))


def _config() -> Config:
    return load_config()


def kms_create_key(args: argparse.Namespace) -> int:
    kms = _kms(args)
    kms.default_key_id()   # the directory and its default key exist first
    print(kms.create_key())
    return 0


def kms_list_keys(args: argparse.Namespace) -> int:
    kms = _kms(args)
    default = kms.default_key_id()
    for path in sorted(kms.path.glob(f"*{KEY_SUFFIX}")):
        key_id = path.name[:-len(KEY_SUFFIX)]
        print(f"{key_id}{'  (default)' if key_id == default else ''}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m gateway.tools", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)
    # -h is the host, as in the reference's script: help is --help only.
    create = commands.add_parser("create-encrypted-bucket", add_help=False,
                                 help="create a bucket whose objects are encrypted at rest")
    create.add_argument("--help", action="help", help="show this help and exit")
    create.add_argument("-a", "--access-key", required=True)
    create.add_argument("-k", "--secret-key", required=True)
    create.add_argument("-b", "--bucket", required=True)
    create.add_argument("-h", "--host", default="localhost")
    create.add_argument("-p", "--port", type=int, default=8000)
    create.add_argument("-s", "--https", action="store_true", help="use https")
    create.add_argument("--insecure", action="store_true", help="with --https: do not verify the certificate")
    create.add_argument("-l", "--location", default="", help="the bucket's location constraint")
    create.add_argument("--algorithm", default="AES256", choices=("AES256", "aws:kms"))
    create.add_argument("--kms-key-id", default="", help="with --algorithm aws:kms: the master key to use")
    create.add_argument("--region", default="us-east-1", help="the region requests are signed for")
    create.set_defaults(run=create_encrypted_bucket)
    for name, run, text in (("kms-create-key", kms_create_key, "add a master key to the file KMS"),
                            ("kms-list-keys", kms_list_keys, "list the file KMS's master keys")):
        cmd = commands.add_parser(name, help=text)
        cmd.add_argument("--kms-path", default="", help="the key directory (default: config.json kms.path, "
                         f"$S3KMSPATH, <repo>/localKMS; its '{DEFAULT_KEY_FILE}' file names the default key)")
        cmd.set_defaults(run=run)
    from gateway.tools.migrate_metadata import add_parser as add_migrate_metadata   # issue 19
    add_migrate_metadata(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
