#!/bin/sh
# Lay out a room under <root>/etc/runner, from a clone:
#   runner.yaml (paths that resolve, history in /var/lib/runner, dashboard token from secrets),
#   secrets.yaml (a fresh dashboard token, mode 0600), scenes/, media/, and the systemd unit.
# Usage: deploy/install.sh [--root DIR]      (default /; --root is for tests and images)
# Idempotent: an existing runner.yaml, secrets.yaml, scenes/ or media/ is kept as it is.
set -eu
src="$(cd "$(dirname "$0")/.." && pwd)"
root=/
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="${2:?--root needs a folder}"; shift 2 ;;
    *) echo "install.sh: unknown argument '$1'; usage: deploy/install.sh [--root DIR]" >&2; exit 2 ;;
  esac
done
root="${root%/}"
etc="$root/etc/runner"
state="$root/var/lib/runner"
mkdir -p "$etc" "$state" "$root/etc/systemd/system"

for d in scenes media; do
  if [ -e "$etc/$d" ]; then echo "install.sh: kept $etc/$d"
  else cp -r "$src/$d" "$etc/$d"; echo "install.sh: copied $d/ to $etc/$d"
  fi
done

if [ -e "$etc/secrets.yaml" ]; then echo "install.sh: kept $etc/secrets.yaml"
else
  token="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
  (umask 077; printf '# Secrets for runner.yaml (!secret NAME). Keep this file mode 0600.\ndashboard_token: "%s"\n' "$token" > "$etc/secrets.yaml")
  chmod 600 "$etc/secrets.yaml"
  echo "install.sh: wrote a new dashboard token to $etc/secrets.yaml (…$(printf %s "$token" | tail -c 4)); read it there to log in"
fi

if [ -e "$etc/runner.yaml" ]; then echo "install.sh: kept $etc/runner.yaml"
else
  sed -e 's|^scenes_dir: .*|scenes_dir: scenes|' \
      -e 's|^media_dir: .*|media_dir: media|' \
      -e 's|^dashboard: .*|dashboard: {bind: 127.0.0.1, port: 8080, token: !secret dashboard_token}|' \
      "$src/examples/runner.yaml" > "$etc/runner.yaml"
  printf 'history_file: %s/history.sqlite3    # the unit'"'"'s StateDirectory\n' "${state#"$root"}" >> "$etc/runner.yaml"
  [ -z "$root" ] || sed -i "s|^history_file: .*|history_file: $state/history.sqlite3|" "$etc/runner.yaml"
  echo "install.sh: wrote $etc/runner.yaml (edit room, broker, shows, devices for your room)"
fi

cp "$src/deploy/runner.service" "$root/etc/systemd/system/runner.service"
echo "install.sh: installed $root/etc/systemd/system/runner.service"

if [ -z "$root" ] && [ "$(id -u)" = 0 ]; then
  id runner >/dev/null 2>&1 || useradd --system --home-dir /var/lib/runner --shell /usr/sbin/nologin runner
  chown -R root:runner "$etc" && chmod 750 "$etc"
  chown runner:runner "$etc/secrets.yaml" "$state"
fi
