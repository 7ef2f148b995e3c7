#!/bin/sh
# Arguments arrive as separate argv elements; no shell ever parses them.
echo "hello, $1 (request $YOUOPS_REQUEST_ID, asked by $YOUOPS_PRINCIPAL)"
