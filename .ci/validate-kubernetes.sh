#!/usr/bin/env bash
# CI: the Kubernetes manifests of deploy/kubernetes/.
#
#  1. installs what a fresh Debian bookworm lacks: kubectl (Debian package
#     kubernetes-client, which provides `kubectl kustomize`) when none is on
#     PATH, and kubernetes-validate (PyPI; it bundles the Kubernetes schemas
#     and works offline) into a virtualenv under target/;
#  2. renders deploy/kubernetes with `kubectl kustomize`;
#  3. validates the render with `kubernetes-validate --strict` against the
#     oldest Kubernetes we support (1.27) and the newest the installed
#     kubernetes-validate bundles, and checks what the render must hold (the
#     objects, no RBAC, sessionlet flags that exist, probes on --http-addr);
#  4. validates each deliberately broken manifest of tests/fixtures/kubernetes/
#     and fails unless every one of them FAILS, with the error it announces;
#  5. runs git-sync's publish hook (deploy/kubernetes/publish-manifests.sh)
#     on a scratch Git repository: publish, update, rename, delete.
#
# Exits non-zero on any failure. Exits 0 without checking only when an
# install step cannot work here, after saying SKIPPED and why.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned, so that the schemas checked against do not change under us; the
# newest Kubernetes version checked is the newest this release bundles.
KV_VERSION=1.37.0
# The oldest Kubernetes version the manifests support (policy/v1
# PodDisruptionBudget, StatefulSet fields, the restricted Pod Security level).
OLDEST=1.27.0

work=target/kubernetes
mkdir -p "$work"

skip() {
  echo "SKIPPED: validate-kubernetes: $*"
  exit 0
}
fail() {
  echo "FAILED: validate-kubernetes: $*" >&2
  exit 1
}

# Installs Debian packages when we may (root, apt-get there); false otherwise.
apt_install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

echo "== kubectl"
if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl is not on PATH: installing Debian's kubernetes-client"
  apt_install kubernetes-client \
    || skip "kubectl is not on PATH and the Debian package kubernetes-client could not be installed (not root, no apt-get, or no package index)"
  command -v kubectl >/dev/null 2>&1 || skip "kubernetes-client installed no kubectl on PATH"
fi
kubectl version --client 2>/dev/null | head -n 2 || true

echo "== kubernetes-validate $KV_VERSION (virtualenv in $work/venv)"
venv=$work/venv
kv=$venv/bin/kubernetes-validate
have_kv() {
  [ -x "$kv" ] && [ "$("$venv/bin/python" -c 'import kubernetes_validate; print(kubernetes_validate.__version__)' 2>/dev/null)" = "$KV_VERSION" ]
}
if ! have_kv; then
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv \
    || skip "python3 is not installed and could not be installed"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian keeps venv (ensurepip) in a package of its own.
    rm -rf "$venv"
    apt_install python3-venv || skip "python3 cannot make a virtualenv and python3-venv could not be installed"
    python3 -m venv "$venv" || skip "python3 -m venv fails even with python3-venv installed"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION" \
    || skip "pip could not install kubernetes-validate==$KV_VERSION (no package index reachable?)"
  have_kv || fail "kubernetes-validate $KV_VERSION is not importable after installing it"
fi
py=$venv/bin/python

# The Kubernetes versions this kubernetes-validate bundles, from its
# package data (one schema folder per version).
mapfile -t bundled < <("$py" - <<'EOF'
import os, re, kubernetes_validate
d = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
vs = {m.group(1) for n in os.listdir(d) if (m := re.fullmatch(r"v(\d+\.\d+\.\d+)-local-strict", n))}
for v in sorted(vs, key=lambda v: tuple(map(int, v.split(".")))):
    print(v)
EOF
)
[ "${#bundled[@]}" -gt 0 ] || fail "found no bundled schemas in kubernetes-validate $KV_VERSION"
echo "bundled Kubernetes versions: ${bundled[*]}"
newest=${bundled[${#bundled[@]} - 1]}
printf '%s\n' "${bundled[@]}" | grep -qx "$OLDEST" \
  || fail "kubernetes-validate $KV_VERSION does not bundle $OLDEST, the oldest version we support"
versions=("$OLDEST")
[ "$newest" = "$OLDEST" ] || versions+=("$newest")

echo "== kubectl kustomize deploy/kubernetes"
rendered=$work/rendered.yaml
kubectl kustomize deploy/kubernetes >"$rendered" || fail "kubectl kustomize deploy/kubernetes failed"
docs=$("$py" -c 'import sys, yaml; print(sum(1 for d in yaml.safe_load_all(open(sys.argv[1])) if d))' "$rendered")
echo "rendered $docs objects into $rendered"
[ "$docs" -gt 0 ] || fail "the render holds no object"

# Validates $1 against version $2, strictly unless $3 is "lenient"; the
# output in $out, the exit code in $rc.
validate() {
  local strict=--strict
  [ "${3:-}" = lenient ] && strict=
  rc=0
  out=$("$kv" $strict -k "$2" "$1" 2>&1) || rc=$?
}

for v in "${versions[@]}"; do
  echo "== kubernetes-validate --strict -k $v (the render)"
  validate "$rendered" "$v"
  echo "$out"
  [ "$rc" = 0 ] || fail "the render does not validate against Kubernetes $v (exit $rc)"
  passed=$(grep -c ' passed for resource ' <<<"$out" || true)
  [ "$passed" = "$docs" ] || fail "$passed of $docs objects reported as passed against Kubernetes $v"
done

echo "== what the render must hold"
sessionlet_bin=${SESSIONLET_BIN:-}
if [ -z "$sessionlet_bin" ]; then
  for b in target/debug/sessionlet target/release/sessionlet; do
    if [ -x "$b" ]; then
      sessionlet_bin=$b
      break
    fi
  done
fi
help=$work/run-help.txt
if [ -n "$sessionlet_bin" ] && "$sessionlet_bin" run --help >"$help" 2>&1; then
  echo "sessionlet flags checked against \`$sessionlet_bin run --help\`"
else
  : >"$help"
  echo "no sessionlet binary built (target/debug, target/release or SESSIONLET_BIN): its flags are not checked against run --help"
fi
"$py" - "$rendered" "$help" <<'EOF' || fail "the render lacks something it must hold (above)"
import re, sys, yaml

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
help_text = open(sys.argv[2]).read()
problems = []
objs = {(d["kind"], d["metadata"]["name"]) for d in docs}
for want in [("StatefulSet", "sessionlet"), ("StatefulSet", "etcd"),
             ("Service", "sessionlet"), ("Service", "etcd"),
             ("PodDisruptionBudget", "sessionlet"), ("PodDisruptionBudget", "etcd")]:
    if want not in objs:
        problems.append(f"no {want[0]} {want[1]}")
rbac = sorted(f"{k}/{n}" for k, n in objs
              if k in ("ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"))
if rbac:
    problems.append(f"RBAC objects, which sessionlet does not need: {rbac}")

def statefulset(name):
    return next((d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == name), None)

sts = statefulset("sessionlet")
if sts:
    pod = sts["spec"]["template"]["spec"]
    c = next(c for c in pod["containers"] if c["name"] == "sessionlet")
    args = c.get("args", [])
    flags = {a.split("=", 1)[0]: (a.split("=", 1) + [None])[1] for a in args if a.startswith("--")}
    if help_text:
        for f in flags:
            if not re.search(rf"(^|\s){re.escape(f)}([\s=,<]|$)", help_text, re.M):
                problems.append(f"sessionlet run has no flag {f}")
    for f in ["--coordinator", "--etcd-endpoints", "--node", "--lease-ttl", "--fence-margin", "--http-addr"]:
        if f not in flags:
            problems.append(f"sessionlet is started without {f}")
    if flags.get("--node") != "$(POD_NAME)":
        problems.append("--node is not the pod's name ($(POD_NAME))")
    env = {e["name"]: e for e in c.get("env", [])}
    if env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        problems.append("POD_NAME does not come from metadata.name (downward API)")
    port = (flags.get("--http-addr") or ":").rsplit(":", 1)[1]
    named = {p.get("name"): str(p["containerPort"]) for p in c.get("ports", [])}
    for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
        get = c.get(probe, {}).get("httpGet", {})
        p = str(get.get("port"))
        if get.get("path") != path or named.get(p, p) != port:
            problems.append(f"{probe} is not GET {path} on the --http-addr port {port}")
    if "terminationGracePeriodSeconds" not in pod:
        problems.append("no terminationGracePeriodSeconds on the sessionlet pods")
    if not any(x["name"] == "git-sync" for x in pod["containers"]):
        problems.append("no git-sync sidecar")
for name in ["sessionlet", "etcd"]:
    s = statefulset(name)
    if not s:
        continue
    pod = s["spec"]["template"]["spec"]
    for c in pod["containers"]:
        sc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
        if not sc.get("runAsNonRoot") or sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}/{c['name']} may run as root or escalate")
        if not c.get("resources", {}).get("requests") or not c.get("resources", {}).get("limits"):
            problems.append(f"{name}/{c['name']} has no resource requests and limits")
for p in problems:
    print("  missing or wrong:", p)
if not problems:
    print(f"ok: {len(docs)} objects, both StatefulSets with their Services and PodDisruptionBudgets, no RBAC, "
          "sessionlet flags and probes consistent, non-root with requests and limits")
sys.exit(1 if problems else 0)
EOF

shopt -s nullglob
broken=(tests/fixtures/kubernetes/broken-*.yaml)
shopt -u nullglob
[ "${#broken[@]}" -gt 0 ] || fail "no deliberately broken manifest under tests/fixtures/kubernetes/"
for f in "${broken[@]}"; do
  # Each fixture says which error it must fail with (`# expect: TEXT`), so
  # that it cannot pass this check by failing for another reason (a
  # missing schema, a YAML error), and `# lenient: passes` when only
  # --strict may refuse it.
  expect=$(sed -n 's/^# expect: //p' "$f" | head -n 1)
  [ -n "$expect" ] || fail "$f has no '# expect: ERROR TEXT' line"
  for v in "${versions[@]}"; do
    echo "== kubernetes-validate --strict -k $v $f (must fail)"
    validate "$f" "$v"
    echo "$out"
    [ "$rc" = 1 ] || fail "$f: exit $rc against Kubernetes $v, not 1 (a validation failure)"
    if ! grep -q 'did not validate' <<<"$out" || ! grep -qF -- "$expect" <<<"$out"; then
      fail "$f did not fail with \"$expect\" against Kubernetes $v"
    fi
    if grep -qx '# lenient: passes' "$f"; then
      echo "== kubernetes-validate -k $v $f (without --strict: must pass)"
      validate "$f" "$v" lenient
      echo "$out"
      [ "$rc" = 0 ] || fail "$f fails even without --strict against Kubernetes $v: it is broken in more than one way"
    fi
  done
done

echo "== git-sync's publish hook on a scratch repository"
if ! command -v git >/dev/null 2>&1; then
  echo "git is not installed: the publish hook is not exercised"
else
  hook=$PWD/deploy/kubernetes/publish-manifests.sh
  scratch=$(mktemp -d "$PWD/$work/hook.XXXXXX")
  trap 'rm -rf "$scratch"' EXIT
  repo=$scratch/repo
  dest=$scratch/manifests
  mkdir -p "$repo/sessions/charters" "$dest"
  g() { git -C "$repo" -c user.name=ci -c user.email=ci@localhost "$@"; }
  g init -q
  printf 'a: 1\n' >"$repo/sessions/a.yaml"
  printf 'b: 1\n' >"$repo/sessions/b.yml"
  printf 'charter\n' >"$repo/sessions/charters/review.md"
  printf 'not a manifest\n' >"$repo/README.md"
  g add -A && g commit -qm one
  publish() { (cd "$repo" && GITSYNC_HASH=$(git rev-parse HEAD) MANIFESTS_DEST=$dest bash "$hook"); }
  listing() { (cd "$dest" && for f in * */*; do [ -f "$f" ] && printf '%s=%s ' "$f" "$(cat "$f")"; done; true); }
  publish
  got=$(listing)
  [ "$got" = "a.yaml=a: 1 b.yml=b: 1 charters/review.md=charter " ] || fail "first publish gave: $got"
  [ "$(cat "$dest/.revision")" = "$(g rev-parse HEAD)" ] || fail ".revision does not name the commit"
  # Again at the same commit (git-sync's restart): nothing is rewritten.
  before=$(stat -c %i "$dest/a.yaml")
  publish
  [ "$(stat -c %i "$dest/a.yaml")" = "$before" ] || fail "an unchanged manifest was rewritten"
  g mv sessions/a.yaml sessions/z.yaml
  g rm -q sessions/charters/review.md
  printf 'b: 2\n' >"$repo/sessions/b.yml"
  g add -A && g commit -qm two
  publish
  got=$(listing)
  [ "$got" = "b.yml=b: 2 z.yaml=a: 1 " ] || fail "second publish gave: $got"
  # A manifest renamed without a change is renamed, not copied and deleted
  # (which would show its session twice for a moment).
  [ "$(stat -c %i "$dest/z.yaml")" = "$before" ] || fail "a renamed manifest was copied, not renamed"
  [ ! -e "$dest/charters" ] || fail "an emptied folder was left behind"
  # A commit without the folder keeps the last published manifests.
  if (cd "$repo" && MANIFESTS_SUBDIR=missing MANIFESTS_DEST=$dest bash "$hook") 2>/dev/null; then
    fail "the hook accepted a commit without its manifests folder"
  fi
  [ "$(listing)" = "$got" ] || fail "a failed publish changed the published manifests"
  echo "ok: published, left unchanged files alone, updated, renamed in place, removed, refused a missing folder"
fi

echo "== validate-kubernetes: the render validates against Kubernetes ${versions[*]}, ${#broken[@]} broken manifest(s) fail as they must"
