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
# the old one (a reader never sees half a file); files no manifest needs any
# more go last (details below).
set -euo pipefail

src=${MANIFESTS_SUBDIR:-sessions}
dest=${MANIFESTS_DEST:-/srv/manifests}
hash=${GITSYNC_HASH:-unknown}
src=${src#./}
src=${src%/}
[ -n "$src" ] || src=.

# A missing folder is more likely a wrong MANIFESTS_SUBDIR or a bad commit
# than a wish to stop everything: refuse it and keep the last published
# commit (git-sync logs this and retries). To stop everything, leave the
# folder without manifests (Git keeps no empty folder: keep a README in it).
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

# What the previous run published and this commit no longer has.
declare -A now=()
for rel in ${manifests[@]+"${manifests[@]}"} ${others[@]+"${others[@]}"}; do now[$rel]=1; done
stale_manifests=()
stale_others=()
if [ -f "$dest/.published" ]; then
  while IFS= read -r -d '' rel; do
    [ -n "${now[$rel]+x}" ] && continue
    [ -e "$dest/$rel" ] || continue
    case $rel in
      */*) stale_others+=("$rel") ;;
      *) stale_manifests+=("$rel") ;;
    esac
  done <"$dest/.published"
fi

# A manifest renamed without a change (the same blob under a new name) is
# renamed here too: one rename event, which sessionlet takes as it is (the
# session goes on). A copy then a removal would declare the session twice
# for a moment (below).
declare -A stale_blob=()
for rel in ${stale_manifests[@]+"${stale_manifests[@]}"}; do
  stale_blob[$(git hash-object -- "$dest/$rel")]=$rel
done
renamed=0
for rel in ${manifests[@]+"${manifests[@]}"}; do
  old=${stale_blob[${blob[$rel]}]-}
  if [ -n "$old" ] && [ ! -e "$dest/$rel" ]; then
    mv -- "$dest/$old" "$dest/$rel"
    unset "stale_blob[${blob[$rel]}]"
    renamed=$((renamed + 1))
  fi
done
kept=()
for rel in ${stale_manifests[@]+"${stale_manifests[@]}"}; do
  [ -e "$dest/$rel" ] && kept+=("$rel")
done
stale_manifests=(${kept[@]+"${kept[@]}"})

# Every new or changed file is copied first to a dot-named temporary beside
# its target (sessionlet ignores dot files); unchanged ones are left alone
# (sessionlet would only read them again for nothing). Then, in one quick
# run without git in between: the other files are renamed into place, then
# the manifests, then the stale manifests are removed, then the stale other
# files. Additions before removals, because sessionlet may read the folder
# between any two steps: a session whose manifest was renamed and changed in
# one commit is then declared twice for a moment (shown as DuplicateName; it
# keeps running on its last good spec), never missing, which would stop it.
staged_others=()
staged_manifests=()
stage() {
  if [ -f "$dest/$1" ] && [ "$(git hash-object -- "$dest/$1")" = "${blob[$1]}" ]; then
    return 1
  fi
  mkdir -p -- "$dest/$(dirname -- "$1")"
  cp -- "$src/$1" "$(temporary "$1")"
}
temporary() { printf '%s/%s/.%s.publish-%s' "$dest" "$(dirname -- "$1")" "$(basename -- "$1")" "$$"; }
remove() {
  local dir
  rm -f -- "$dest/$1"
  # Folders left empty go too, up to (not including) $dest.
  dir=$(dirname -- "$1")
  while [ "$dir" != . ] && rmdir -- "$dest/$dir" 2>/dev/null; do
    dir=$(dirname -- "$dir")
  done
}
for rel in ${others[@]+"${others[@]}"}; do stage "$rel" && staged_others+=("$rel"); done
for rel in ${manifests[@]+"${manifests[@]}"}; do stage "$rel" && staged_manifests+=("$rel"); done
for rel in ${staged_others[@]+"${staged_others[@]}"}; do mv -f -- "$(temporary "$rel")" "$dest/$rel"; done
for rel in ${staged_manifests[@]+"${staged_manifests[@]}"}; do mv -f -- "$(temporary "$rel")" "$dest/$rel"; done
for rel in ${stale_manifests[@]+"${stale_manifests[@]}"}; do remove "$rel"; done
for rel in ${stale_others[@]+"${stale_others[@]}"}; do remove "$rel"; done

# The list for the next run, and which commit is published (for people:
# `kubectl exec POD -c git-sync -- cat /srv/manifests/.revision`).
printf '%s\0' ${manifests[@]+"${manifests[@]}"} ${others[@]+"${others[@]}"} >"$dest/.published.tmp"
mv -f -- "$dest/.published.tmp" "$dest/.published"
printf '%s\n' "$hash" >"$dest/.revision.tmp"
mv -f -- "$dest/.revision.tmp" "$dest/.revision"
removed=$((${#stale_manifests[@]} + ${#stale_others[@]}))
echo "publish-manifests: $hash: ${#manifests[@]} manifest(s) and ${#others[@]} other file(s) in '$src'; $((${#staged_others[@]} + ${#staged_manifests[@]})) written, $renamed renamed, $removed removed"
