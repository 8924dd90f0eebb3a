#!/bin/sh
# Run a command in the network namespace `unshare -n` just made: only a loopback, brought up here.
# make test_deploy: unshare -n tests/deploy/netns-run.sh python -m pytest tests/deploy
set -e
ip link set lo up
export PYS3_TEST_DEPLOY=1
exec "$@"
