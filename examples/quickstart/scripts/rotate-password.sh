#!/bin/sh
set -eu
# The secret arrives as an environment variable, never on the command line.
len=$(printf '%s' "$YOUOPS_PARAM_PASSWORD" | wc -c)
echo "rotated password of $1 (new password has $len characters)"
# Even if a script prints the secret, YouOps scrubs it from the output:
echo "debug: new password is $YOUOPS_PARAM_PASSWORD"
