#!/usr/bin/env bash
# Build (once per machine) every binary the local cluster needs, from the Go module proxy.
# Binaries land in $SVCAUDIT_CACHE/<component>-<version>/ (default ~/.cache/svcaudit), outside
# the checkout, so a fresh clone on the same machine rebuilds nothing.
# Usage: build.sh [component...]   components: kube etcd kwok coredns helm (default: all)
#        build.sh popeye             optional, not in the default list: the benchmark's peer (bench/)
#        build.sh kubeadm kind crictl  optional: what the kind node image needs (e2e/kind/)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC1091
source "$here/versions.env"
cache=${SVCAUDIT_CACHE:-$HOME/.cache/svcaudit}
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
export GOPROXY=${GOPROXY:-https://proxy.golang.org,direct}
mkdir -p "$cache"
t_all=$(date +%s)

log() { printf '[build %4ss] %s\n' "$(( $(date +%s) - t_all ))" "$*"; }

# wrapper DIR MODULE-LINE... : a scratch module whose go.mod requires/replaces what is given.
wrapper() {
  local dir=$1; shift
  rm -rf "$dir"; mkdir -p "$dir"
  printf 'module svcaudit.local/build\n\ngo 1.24\n\n%s\n' "$*" > "$dir/go.mod"
}

# build_kube [BINARY...] : the Kubernetes binaries given (default: the local cluster's), only
# those not cached yet; all through the same wrapper module and version ldflags.
build_kube() {
  local v=$KUBE_VERSION out="$cache/kubernetes-$KUBE_VERSION"
  local want=("$@") bins=() b
  [ ${#want[@]} -gt 0 ] || want=(kube-apiserver kube-controller-manager kube-scheduler kubectl
    kubelet kube-proxy)
  for b in "${want[@]}"; do [ -x "$out/$b" ] || bins+=("$b"); done
  if [ ${#bins[@]} = 0 ]; then log "kubernetes $v: ${want[*]} cached in $out"; return; fi
  local sv="v0.${v#v1.}" staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime
    client-go cloud-provider cluster-bootstrap code-generator component-base component-helpers
    controller-manager cri-api cri-client csi-translation-lib dynamic-resource-allocation
    endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy
    kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission sample-apiserver
    sample-cli-plugin sample-controller)
  local mod="require k8s.io/kubernetes $v"$'\n' s
  for s in "${staging[@]}"; do mod+="replace k8s.io/$s => k8s.io/$s $sv"$'\n'; done
  local w="$cache/.work/kubernetes-$v"
  wrapper "$w" "$mod"
  local minor=${v#v1.}; minor=${minor%%.*}
  local ld="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ld+=" -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  log "kubernetes $v: building ${bins[*]} (cold: 6-8 min on 2 cores)"
  local t=$(date +%s)
  rm -rf "$w/bin"
  (cd "$w" && go mod download k8s.io/kubernetes >/dev/null 2>&1 || true
   cd "$w" && go build -trimpath -ldflags "$ld" -o "$w/bin/" \
     $(for b in "${bins[@]}"; do printf 'k8s.io/kubernetes/cmd/%s ' "$b"; done))
  mkdir -p "$out"; cp "$w"/bin/* "$out/"; rm -rf "$w/bin"
  log "kubernetes $v: built in $(( $(date +%s) - t ))s"
}

build_etcd() {
  local v=$ETCD_VERSION out="$cache/etcd-$ETCD_VERSION"
  if [ -x "$out/etcd" ]; then log "etcd $v: cached"; return; fi
  local w="$cache/.work/etcd-$v" m
  local mod="require go.etcd.io/etcd/server/v3 $v"$'\n'
  for m in api/v3 client/pkg/v3 client/v3 pkg/v3; do mod+="require go.etcd.io/etcd/$m $v"$'\n'; done
  wrapper "$w" "$mod"
  log "etcd $v: building"; local t=$(date +%s)
  (cd "$w" && go build -trimpath -ldflags "-s -w" -o "$w/etcd" go.etcd.io/etcd/server/v3)
  mkdir -p "$out"; cp "$w/etcd" "$out/"
  log "etcd $v: built in $(( $(date +%s) - t ))s"
}

# go_install NAME VERSION PACKAGE : plain `go install pkg@version` into the cache.
go_install() {
  local name=$1 v=$2 pkg=$3 out="$cache/$1-$2"
  if [ -x "$out/$name" ]; then log "$name $v: cached"; return; fi
  log "$name $v: building"; local t=$(date +%s)
  mkdir -p "$out"
  GOFLAGS= GOBIN="$out" go install -trimpath -ldflags "-s -w" "$pkg@$v"
  log "$name $v: built in $(( $(date +%s) - t ))s"
}

# Popeye (optional; only bench/ uses it). Built through a wrapper module like etcd: the proxy
# refuses popeye's version list, which `go install pkg@version` asks for (deprecation check).
build_popeye() {
  local v=$POPEYE_VERSION out="$cache/popeye-$POPEYE_VERSION"
  if [ -x "$out/popeye" ]; then log "popeye $v: cached"; return; fi
  local w="$cache/.work/popeye-$v"
  wrapper "$w" "require github.com/derailed/popeye $v"
  log "popeye $v: building"; local t=$(date +%s)
  (cd "$w" && go build -trimpath -ldflags "-s -w -X github.com/derailed/popeye/cmd.version=$v" \
     -o "$w/popeye" github.com/derailed/popeye)
  mkdir -p "$out"; cp "$w/popeye" "$out/"
  log "popeye $v: built in $(( $(date +%s) - t ))s"
}

# crictl (only the kind node image uses it), with its version stamped in.
build_crictl() {
  local v=$CRI_TOOLS_VERSION out="$cache/crictl-$CRI_TOOLS_VERSION"
  if [ -x "$out/crictl" ]; then log "crictl $v: cached"; return; fi
  log "crictl $v: building"; local t=$(date +%s)
  mkdir -p "$out"
  GOFLAGS= GOBIN="$out" go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$v" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$v"
  log "crictl $v: built in $(( $(date +%s) - t ))s"
}

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(etcd kwok coredns kube helm)
for c in "${components[@]}"; do
  case $c in
    kube) build_kube ;;
    etcd) build_etcd ;;
    kwok) go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
          # kwok's own stage definitions (node/pod lifecycles) ship in its module, not its binary.
          stages="$cache/kwok-$KWOK_VERSION/stages"
          if [ ! -d "$stages" ]; then
            src="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
            [ -d "$src" ] || (cd "$cache" && GOFLAGS= go mod download "sigs.k8s.io/kwok@$KWOK_VERSION")
            mkdir -p "$stages"
            for f in node/fast/node-initialize node/heartbeat/node-heartbeat pod/fast/pod-ready \
                     pod/fast/pod-complete pod/fast/pod-delete; do
              cp "$src/$f.yaml" "$stages/"
            done
          fi ;;
    coredns) go_install coredns "$COREDNS_VERSION" github.com/coredns/coredns ;;
    helm) go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm ;;
    popeye) build_popeye ;;
    kubeadm) build_kube kubeadm ;;
    kind) go_install kind "$KIND_VERSION" sigs.k8s.io/kind ;;
    crictl) build_crictl ;;
    *) echo "unknown component $c" >&2; exit 2 ;;
  esac
done
log "all done in $(( $(date +%s) - t_all ))s; binaries under $cache"
