#!/usr/bin/env bash
# Install edge as a systemd service on Debian, Ubuntu or JetPack. Run it again at
# will: it does only what is missing or changed, and a second run changes nothing.
#
#   sudo scripts/install.sh                       install from this source folder
#   sudo scripts/install.sh --from edge-X.whl     install from a wheel
#   sudo scripts/install.sh --extras tensorrt,nvml   GPU box (x86): TensorRT and NVML from PyPI
#   sudo scripts/install.sh --wheelhouse DIR      no index: every package from DIR (offline box)
#   sudo scripts/install.sh --uninstall           remove the service; keep /etc/edge and /var/lib/edge
#   sudo scripts/install.sh --python /usr/bin/python3.12   another system interpreter
#   scripts/install.sh --root DIR ...             install the files under DIR (packaging, tests):
#                                                 the service user and systemctl steps are skipped
#
# The service's virtual environment is built from the system Python (/usr/bin/python3,
# 3.10 or newer, with python3-venv), never from whatever python3 comes first on PATH:
# an interpreter under a home folder (pyenv, conda, ~/.local) is refused, because the
# service runs as its own user with ProtectHome=, which hides /home, /root and /run/user.
#
# What it makes:
#   user and group "edge" (system account, no login, also in group video for the GPU)
#   /opt/edge/venv                    the virtual environment running the daemon
#   /usr/local/bin/edge               a link to its edge command (doctor, status)
#   /opt/edge/engines                 engine bundles shipped in the source folder (engines/)
#   /etc/edge/config.yaml             from the commented example, kept if it exists
#   /etc/edge/credentials/            mqtt-password, mqtt-tls-key (root only; empty until set)
#   /etc/systemd/system/edge.service  the unit, enabled (started by the technician: see README)
#   /var/lib/edge, /srv/edge/export   state directory and default watch folder
# Private keys (*.key) under engines/ are never installed: the demo signing key is for
# a developer's machine, not a box.
# The only network it uses is the package registry pip is configured with (or none,
# with --wheelhouse).

set -euo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
ROOT=/
SOURCE=$HERE
EXTRAS=
WHEELHOUSE=
PYTHON=${PYTHON:-}
#: the interpreters tried, in order, when --python is not given
SYSTEM_PYTHONS=(/usr/bin/python3 /usr/local/bin/python3)
ACTION=install
SERVICE_USER=edge

say() { echo "install: $*"; }
die() { echo "install: error: $*" >&2; exit 1; }

# The comment block at the top of this file, up to its first empty line.
usage() { sed -n '2,/^$/p' "$0" | sed -e '/^$/d' -e 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case $1 in
    --root|--prefix) ROOT=${2:?"$1 needs a folder"}; shift 2 ;;
    --from) SOURCE=${2:?"--from needs a wheel or a source folder"}; shift 2 ;;
    --extras) EXTRAS=${2:?"--extras needs a list such as tensorrt,nvml"}; shift 2 ;;
    --wheelhouse) WHEELHOUSE=${2:?"--wheelhouse needs a folder"}; shift 2 ;;
    --python) PYTHON=${2:?"--python needs an interpreter"}; shift 2 ;;
    --uninstall) ACTION=uninstall; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

ROOT=$(cd "$ROOT" 2>/dev/null && pwd) || die "--root folder does not exist"
R=${ROOT%/}                       # "" for the running system
OPT=$R/opt/edge
VENV=$OPT/venv
ETC=$R/etc/edge
UNIT_DIR=$R/etc/systemd/system
UNIT=$UNIT_DIR/edge.service
STATE=$R/var/lib/edge
EXPORT=$R/srv/edge/export

on_running_system() { [ -z "$R" ]; }
systemd_booted() { on_running_system && [ -d /run/systemd/system ]; }

# -- the service account ---------------------------------------------------------------

ensure_user() {
  if ! on_running_system; then
    say "--root: not creating the user $SERVICE_USER (create it on the target system)"
    return
  fi
  if ! getent passwd "$SERVICE_USER" >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/edge --no-create-home \
      --shell /usr/sbin/nologin --comment "edge AI pre-read service" "$SERVICE_USER"
    say "created the system user $SERVICE_USER"
  fi
  # The GPU device nodes of a Jetson (and some x86 drivers) belong to group video.
  if getent group video >/dev/null && ! id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx video; then
    usermod -a -G video "$SERVICE_USER"
    say "added $SERVICE_USER to group video"
  fi
}

# Owner for what the service writes; root on a --root install (no such user there).
chown_service() {
  if on_running_system; then chown "$SERVICE_USER:$SERVICE_USER" "$@"; fi
}

make_dir() {  # make_dir MODE DIR [service]: create once, never touch an existing one
  local mode=$1 dir=$2
  [ -d "$dir" ] && return
  install -d -m "$mode" "$dir"
  if [ "${3:-}" = service ]; then chown_service "$dir"; fi
  say "created $dir"
}

# -- the virtual environment -----------------------------------------------------------

is_jetson() { [ -e "$R/etc/nv_tegra_release" ]; }

source_fingerprint() {
  # What was installed, so a second run with the same source does not reinstall it.
  {
    echo "extras=$EXTRAS"
    if [ -f "$SOURCE" ]; then
      sha256sum <"$SOURCE"
    else
      (cd "$SOURCE" && find pyproject.toml edge -type f ! -path '*/__pycache__/*' \
        ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum)
    fi
  } | sha256sum | cut -d' ' -f1
}

# -- the interpreter ---------------------------------------------------------------------

choose_python() {
  if [ -z "$PYTHON" ]; then
    local candidate
    for candidate in "${SYSTEM_PYTHONS[@]}"; do
      if [ -x "$candidate" ]; then PYTHON=$candidate; break; fi
    done
    [ -n "$PYTHON" ] || die "no system Python 3 (${SYSTEM_PYTHONS[*]}): apt-get install python3 python3-venv"
  fi
  local given real base home
  given=$(command -v "$PYTHON") || die "--python $PYTHON: no such interpreter"
  PYTHON=$given
  real=$(readlink -f "$given")
  base=$("$PYTHON" -c 'import os, sys; print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))') ||
    die "$PYTHON does not run"
  for candidate in "$real" "$base"; do
    if home=$(home_holding "$candidate"); then
      die "$PYTHON is $candidate, under the home folder $home, which the service (user $SERVICE_USER, ProtectHome=) cannot read: install with the system Python, --python /usr/bin/python3 (apt-get install python3 python3-venv)"
    fi
  done
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "$PYTHON is older than Python 3.10: --python /usr/bin/python3.10 or newer"
  "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null ||
    die "$PYTHON cannot make a virtual environment: apt-get install python3-venv"
  say "using the Python at $base"
}

# Print the home folder that holds $1 and succeed, or fail: /root, /home, /run/user,
# the caller's $HOME, and the home of every account that can log in (UID 1000 or more).
home_holding() {
  local path=$1 home
  while IFS= read -r home; do
    case $home in "" | / | /nonexistent) continue ;; esac
    case $path in "$home"/*) echo "$home"; return 0 ;; esac
  done < <(
    printf '%s\n' /root /home /run/user "${HOME:-}"
    getent passwd | awk -F: '$3 >= 1000 && $3 < 65534 { print $6 }'
  )
  return 1
}

# On the running system: can the service user run it (a folder above it may be private)?
check_python_for_service() {
  on_running_system || return 0
  command -v runuser >/dev/null 2>&1 || return 0
  runuser -u "$SERVICE_USER" -- "$PYTHON" -c 'pass' 2>/dev/null ||
    die "the user $SERVICE_USER cannot run $PYTHON (a folder above it is private): use --python /usr/bin/python3"
}

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    local options=()
    # JetPack installs TensorRT for the system Python (apt), not on PyPI: let the venv see it.
    if is_jetson; then options+=(--system-site-packages); fi
    install -d -m 0755 "$OPT"
    "$PYTHON" -m venv "${options[@]}" "$VENV"
    say "created the virtual environment $VENV"
  fi
  local stamp=$VENV/.edge-source fingerprint target
  fingerprint=$(source_fingerprint)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ]; then
    say "edge is installed from this source already"
    return
  fi
  target=$SOURCE
  if [ -d "$SOURCE" ]; then
    # Build from a clean copy: setuptools builds in the source folder and would
    # both litter it (build/, *.egg-info) and ship stale modules left in build/.
    BUILD_DIR=$(mktemp -d)
    trap 'rm -rf "$BUILD_DIR"' EXIT
    cp -r "$SOURCE/pyproject.toml" "$SOURCE/README.md" "$SOURCE/edge" "$BUILD_DIR/"
    find "$BUILD_DIR" -name __pycache__ -prune -exec rm -rf {} +
    target=$BUILD_DIR
  fi
  if [ -n "$EXTRAS" ]; then target="$target[$EXTRAS]"; fi
  local pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
  if [ -n "$WHEELHOUSE" ]; then pip+=(--no-index --find-links "$WHEELHOUSE"); fi
  say "installing edge from $SOURCE${EXTRAS:+ with [$EXTRAS]} into $VENV"
  "${pip[@]}" "$target"
  # pynetdicom's wheel carries its own test suite, throwaway TLS keys included: no
  # private key, not even a published test one, belongs on a box.
  find "$VENV" -path '*/site-packages/pynetdicom/tests' -type d -prune -exec rm -rf {} +
  echo "$fingerprint" >"$stamp"
}

install_engines() {
  [ -d "$SOURCE/engines" ] || { say "no engines/ in the source: install one with the engine store"; return; }
  local file
  while IFS= read -r -d '' file; do
    install -C -D -m 0644 "$SOURCE/engines/$file" "$OPT/engines/$file"
  done < <(cd "$SOURCE/engines" && find . -type f ! -name '*.pyc' ! -name '*.key' -printf '%P\0')
  # An earlier version copied the demo's private signing key: take it away.
  while IFS= read -r -d '' file; do
    rm -f "$file"
    say "removed the private key $file (private keys never belong on a box)"
  done < <(find "$OPT/engines" -type f -name '*.key' -print0 2>/dev/null)
}

# -- configuration, credentials, unit --------------------------------------------------

install_config() {
  make_dir 0755 "$ETC"
  install -C -m 0644 "$HERE/systemd/config.example.yaml" "$ETC/config.example.yaml"
  if [ ! -e "$ETC/config.yaml" ]; then
    install -m 0644 "$HERE/systemd/config.example.yaml" "$ETC/config.yaml"
    say "wrote $ETC/config.yaml from the example: edit site, device, mqtt, watch.dir"
  else
    say "kept the existing $ETC/config.yaml"
  fi
  make_dir 0700 "$ETC/credentials"
  local name
  for name in mqtt-password mqtt-tls-key; do
    # LoadCredential= fails the start when its file is missing: an empty one is
    # loaded and never read until the configuration names it.
    if [ ! -e "$ETC/credentials/$name" ]; then
      install -m 0600 /dev/null "$ETC/credentials/$name"
    fi
  done
}

install_unit() {
  make_dir 0755 "$UNIT_DIR"
  if ! cmp -s "$HERE/systemd/edge.service" "$UNIT"; then
    install -m 0644 "$HERE/systemd/edge.service" "$UNIT"
    say "installed $UNIT"
    if systemd_booted; then systemctl daemon-reload; fi
  fi
  if command -v systemctl >/dev/null 2>&1; then
    # --root works whether or not systemd runs: it only makes the wants symlink.
    systemctl --root="$ROOT" --quiet enable edge.service
    say "edge.service is enabled: it starts at boot"
  else
    say "no systemctl here: enable the unit on the target system (systemctl enable edge)"
  fi
  if ! systemd_booted; then
    say "systemd is not running here: not reloading or starting anything"
  fi
}

link_command() {
  # `edge doctor` and `edge status` on the technician's PATH.
  local link=$R/usr/local/bin/edge
  if [ "$(readlink "$link" 2>/dev/null)" != /opt/edge/venv/bin/edge ]; then
    install -d -m 0755 "$R/usr/local/bin"
    ln -sfn /opt/edge/venv/bin/edge "$link"
    say "linked $link to /opt/edge/venv/bin/edge"
  fi
}

install_all() {
  choose_python
  ensure_user
  check_python_for_service
  ensure_venv
  link_command
  install_engines
  install_config
  make_dir 0750 "$STATE" service
  make_dir 0755 "$R/srv/edge"
  make_dir 0750 "$EXPORT" service
  install_unit
  say "done. Next: edit $ETC/config.yaml, run 'edge doctor' (it reads /etc/edge/config.yaml),"
  say "then 'systemctl start edge' (see the README, For the field technician)"
}

uninstall_all() {
  if systemd_booted && systemctl is-active --quiet edge.service; then
    systemctl stop edge.service
    say "stopped edge.service"
  fi
  if command -v systemctl >/dev/null 2>&1 && [ -e "$UNIT" ]; then
    systemctl --root="$ROOT" --quiet disable edge.service
  fi
  if [ -e "$UNIT" ]; then
    rm -f "$UNIT"
    say "removed $UNIT"
    if systemd_booted; then systemctl daemon-reload; fi
  fi
  if [ "$(readlink "$R/usr/local/bin/edge" 2>/dev/null)" = /opt/edge/venv/bin/edge ]; then
    rm -f "$R/usr/local/bin/edge"
  fi
  if [ -d "$OPT" ]; then
    rm -rf "$OPT"
    say "removed $OPT"
  fi
  say "kept the configuration ($ETC), the state and journal ($STATE) and the user $SERVICE_USER"
}

if on_running_system && [ "$(id -u)" -ne 0 ]; then
  die "run as root (sudo), or with --root DIR to install into a folder"
fi
case $ACTION in
  install)
    [ -e "$SOURCE" ] || die "--from $SOURCE does not exist"
    SOURCE=$(cd "$(dirname "$SOURCE")" && pwd)/$(basename "$SOURCE")
    install_all ;;
  uninstall) uninstall_all ;;
esac
