#!/bin/sh
set -eu
service="$1"; version="$2"; env="$3"
echo "deploying $service $version to $env"
for step in "pulling image" "running migrations" "rolling out 3/3 replicas" "health checks"; do
  sleep 1
  echo "  - $step"
done
echo "$service $version is live on $env"
