#!/bin/bash
# git-sync's --exechook-command: publishes the manifests folder of the commit
# git-sync just checked out into the folder sessionlet watches.
#
# Why a copy and not sessionlet watching git-sync's link directly: git-sync
# publishes a commit by pointing a symlink at a new worktree and deleting the
# old one, while sessionlet resolves --dir once at start; it would keep
# watching a deleted worktree. The copy keeps one folder that changes file by
# file, the way sessionlet expects a checkout to change (`git pull`).
#
# git-sync runs this in the new worktree, with GITSYNC_HASH set, after each
# new commit and again at its start (so it must be idempotent, and it is), and
# retries it after a failure (--exechook-backoff).
#
# Environment (set on the git-sync container):
#   MANIFESTS_SUBDIR  the folder of the repository that holds the manifests
#                     ("." for the top); default "sessions"
#   MANIFESTS_DEST    the folder sessionlet watches; default /srv/manifests
#
# The order matters to sessionlet, which reads a manifest as soon as it is
# renamed into place: files the manifests refer to (charters, env files,
# prompts, anything in subfolders) first, then the manifests, each written
# to a dot-named temporary (sessionlet ignores dot files) and renamed over
# the old one (a reader never sees half a file), then removals. A commit that
# renames a.yaml to b.yaml makes b.yaml appear before a.yaml goes, so the
# session is declared twice for a moment rather than deleted for a moment.
set -euo pipefail

src=${MANIFESTS_SUBDIR:-sessions}
dest=${MANIFESTS_DEST:-/srv/manifests}
hash=${GITSYNC_HASH:-unknown}
src=${src#./}
src=${src%/}
[ -n "$src" ] || src=.

# A missing folder is more likely a wrong MANIFESTS_SUBDIR or a bad commit
# than a wish to stop everything (an empty folder says that): refuse it and
# keep publishing the last good commit. git-sync logs this and retries.
if [ ! -d "$src" ]; then
  echo "publish-manifests: commit $hash has no folder '$src'; kept the last published manifests" >&2
  exit 1
fi
if [ ! -d "$dest" ]; then
  echo "publish-manifests: $dest is not a folder" >&2
  exit 1
fi

# The tracked files of the folder, relative to it, with their blob ids (git
# knows them; the image has no find). NUL-separated: names may hold spaces
# or newlines.
manifests=()
others=()
declare -A blob=()
while IFS= read -r -d '' entry; do
  path=${entry#*$'\t'}
  # Submodules (mode 160000) are not files to copy.
  [ "${entry%% *}" = 160000 ] && continue
  rel=${path#"$src"/}
  [ "$src" = . ] && rel=$path
  case $rel in
    */*) others+=("$rel") ;;
    .*) continue ;; # sessionlet ignores dot files, and .published is ours
    *.yaml | *.yml) manifests+=("$rel") ;;
    *) others+=("$rel") ;;
  esac
  # "MODE BLOB STAGE<TAB>PATH"
  meta=${entry%%$'\t'*}
  meta=${meta#* }
  blob[$rel]=${meta%% *}
done < <(git ls-files -s -z -- "$src")

# Copies $1 (relative) from the commit into $dest through a dot-named
# temporary beside the target, then renames it into place. An unchanged file
# is left alone: sessionlet would only read it again for nothing.
publish() {
  local rel=$1 dir base tmp
  if [ -f "$dest/$rel" ] && [ "$(git hash-object -- "$dest/$rel")" = "${blob[$rel]}" ]; then
    return 0
  fi
  dir=$(dirname -- "$rel")
  base=$(basename -- "$rel")
  mkdir -p -- "$dest/$dir"
  tmp="$dest/$dir/.$base.publish-$$"
  cp -- "$src/$rel" "$tmp"
  mv -f -- "$tmp" "$dest/$rel"
  changed=$((changed + 1))
}

changed=0

for rel in ${others[@]+"${others[@]}"}; do publish "$rel"; done
for rel in ${manifests[@]+"${manifests[@]}"}; do publish "$rel"; done

# What the previous run published and this commit no longer has goes:
# manifests first (so sessions stop before what they refer to disappears).
declare -A now=()
for rel in ${manifests[@]+"${manifests[@]}"} ${others[@]+"${others[@]}"}; do now[$rel]=1; done
if [ -f "$dest/.published" ]; then
  stale_manifests=()
  stale_others=()
  while IFS= read -r -d '' rel; do
    [ -n "${now[$rel]+x}" ] && continue
    case $rel in
      */*) stale_others+=("$rel") ;;
      *) stale_manifests+=("$rel") ;;
    esac
  done <"$dest/.published"
  for rel in ${stale_manifests[@]+"${stale_manifests[@]}"} ${stale_others[@]+"${stale_others[@]}"}; do
    rm -f -- "$dest/$rel"
    removed=$((${removed:-0} + 1))
    # Folders left empty go too, up to (not including) $dest.
    dir=$(dirname -- "$rel")
    while [ "$dir" != . ] && rmdir -- "$dest/$dir" 2>/dev/null; do
      dir=$(dirname -- "$dir")
    done
  done
fi

# The list for the next run, and which commit is published (for people:
# `kubectl exec POD -c git-sync -- cat /srv/manifests/.revision`).
printf '%s\0' ${manifests[@]+"${manifests[@]}"} ${others[@]+"${others[@]}"} >"$dest/.published.tmp"
mv -f -- "$dest/.published.tmp" "$dest/.published"
printf '%s\n' "$hash" >"$dest/.revision.tmp"
mv -f -- "$dest/.revision.tmp" "$dest/.revision"
echo "publish-manifests: $hash: ${#manifests[@]} manifest(s) and ${#others[@]} other file(s) in '$src', $changed written, ${removed:-0} removed"
