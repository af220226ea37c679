#!/usr/bin/env bash
# Builds the release binary and installs it.
#
#   ./install.sh                      # /usr/local/bin/tinydrop
#   ./install.sh --prefix ~/.local    # ~/.local/bin/tinydrop
#   ./install.sh --systemd            # also a service running as user `tinydrop`,
#                                     # serving /var/lib/tinydrop/uploads on port 8080
set -euo pipefail

prefix=/usr/local
systemd=0
usage() {
  sed -n "2,7p" "$0" | sed 's/^# \{0,1\}//'
}
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || { echo "install.sh: --prefix needs a directory" >&2; exit 2; }; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --systemd) systemd=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")"
command -v cargo >/dev/null || { echo "install.sh: cargo is needed to build tinydrop (https://rustup.rs)" >&2; exit 1; }
cargo build --release --locked 2>/dev/null || cargo build --release
install -d "$prefix/bin"
install -m 0755 target/release/tinydrop "$prefix/bin/tinydrop"
echo "installed $prefix/bin/tinydrop"

if [ "$systemd" = 1 ]; then
  [ "$(id -u)" = 0 ] || { echo "install.sh: --systemd needs root" >&2; exit 1; }
  if ! id tinydrop >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/tinydrop --shell /usr/sbin/nologin tinydrop
  fi
  install -d -o tinydrop -g tinydrop -m 0750 /var/lib/tinydrop /var/lib/tinydrop/uploads
  cat > /etc/systemd/system/tinydrop.service <<UNIT
[Unit]
Description=tinydrop: file uploads over HTTP
After=network-online.target
Wants=network-online.target

[Service]
User=tinydrop
Group=tinydrop
# Settings: edit /etc/default/tinydrop (TINYDROP_PORT=8080, TINYDROP_AUTH_FILE=..., TINYDROP_MAX_SIZE=10G)
EnvironmentFile=-/etc/default/tinydrop
ExecStart=$prefix/bin/tinydrop /var/lib/tinydrop/uploads
Restart=on-failure
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ReadWritePaths=/var/lib/tinydrop
LimitNOFILE=4096

[Install]
WantedBy=multi-user.target
UNIT
  [ -f /etc/default/tinydrop ] || printf '# tinydrop settings, one TINYDROP_<OPTION>=value a line\n#TINYDROP_PORT=8080\n' > /etc/default/tinydrop
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now tinydrop.service
    echo "tinydrop.service enabled and started; logs: journalctl -u tinydrop"
  else
    echo "wrote /etc/systemd/system/tinydrop.service (systemd is not running here; enable it with: systemctl enable --now tinydrop)"
  fi
fi
