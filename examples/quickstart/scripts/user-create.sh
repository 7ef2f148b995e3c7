#!/bin/sh
set -eu
name="$1"; email="$2"; team="$3"
dir="${YOUOPS_DEMO_DIR:-$(pwd)/data}"
mkdir -p "$dir"
db="$dir/users.tsv"
if [ -f "$db" ] && grep -q "^$name	" "$db"; then
  echo "user $name already exists" >&2
  exit 3
fi
printf '%s\t%s\t%s\n' "$name" "$email" "$team" >> "$db"
echo "created user $name <$email> in team $team"
