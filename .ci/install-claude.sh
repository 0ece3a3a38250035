#!/usr/bin/env bash
# Installs the pinned Claude Code CLI that tests/agent_cli.rs drives against a
# fake Messages API on 127.0.0.1. The version matches the transcripts in
# tests/fixtures/claude/ (re-capture them when bumping it).
#
# Idempotent: does nothing when the pinned version is already installed.
# Prints the binary's path on stdout (everything else goes to stderr).
#
# usage: .ci/install-claude.sh [PREFIX]   (default: <repo>/.ci/claude, ignored by git)
set -euo pipefail

VERSION="2.1.197"
PACKAGE="@anthropic-ai/claude-code"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=${1:-"$HERE/claude"}
BIN="$PREFIX/node_modules/.bin/claude"
PKG_JSON="$PREFIX/node_modules/$PACKAGE/package.json"

installed_version() {
    # The package.json's "version" field, without needing jq or node.
    [ -f "$PKG_JSON" ] || return 1
    sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' "$PKG_JSON" | head -n 1
}

if [ -x "$BIN" ] && [ "$(installed_version || true)" = "$VERSION" ]; then
    echo "$BIN"
    exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "install-claude: npm not found; install Node.js/npm or set SESSIONLET_CLAUDE_BIN" >&2
    exit 1
fi

mkdir -p "$PREFIX"
echo "install-claude: installing $PACKAGE@$VERSION into $PREFIX" >&2
# --no-save/--no-package-lock: the prefix is a scratch folder, not a project.
# No --ignore-scripts: the package selects its native binary in postinstall.
npm install --prefix "$PREFIX" --no-save --no-package-lock --no-audit --no-fund \
    --loglevel=error "$PACKAGE@$VERSION" >&2

got=$(installed_version || true)
if [ ! -x "$BIN" ] || [ "$got" != "$VERSION" ]; then
    echo "install-claude: expected $PACKAGE@$VERSION at $BIN, found version '${got:-none}'" >&2
    exit 1
fi
echo "$BIN"
