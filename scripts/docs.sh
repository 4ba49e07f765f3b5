#!/usr/bin/env bash
# The documentation site (MkDocs, mkdocs.yml): `bash scripts/docs.sh` serves it at
# http://127.0.0.1:8000 (rebuilt on every edit); `bash scripts/docs.sh build` builds it
# strictly (a warning is an error) into build/site, as the test command does.
source "$(dirname "$0")/env.sh"
case "${1:-serve}" in
  serve) NO_MKDOCS_2_WARNING=1 exec mkdocs serve --strict -a 127.0.0.1:8000 ;;
  build) NO_MKDOCS_2_WARNING=1 exec mkdocs build --strict ;;
  *) echo "usage: bash scripts/docs.sh [serve|build]" >&2; exit 2 ;;
esac
