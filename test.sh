#!/usr/bin/env bash
# The one test command (README, .ci/run): on a Debian 12 or Ubuntu 22.04+
# machine, as root, from a clone in any folder. Installs what the tests
# need (apt), then runs every test target; arguments go to `cargo test`
# (e.g. `./test.sh --test run`). A component that cannot be installed
# (no registry) makes the tests that need it say SKIPPED, naming its
# Debian package; nothing fails because it is missing.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: run as root: the tests run real daemons, users, cgroups, tmpfs, PID namespaces and a container" >&2
  exit 1
fi
command -v cargo >/dev/null || {
  echo "test.sh: cargo is not installed: Rust 1.85 or newer, from rustup.rs" >&2
  exit 1
}

apt_install() { # PACKAGE... ; returns non-zero if apt could not
  { [ -n "${apt_updated:-}" ] || { apt-get update -qq && apt_updated=1; }; } &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# Needed: a C linker for cargo; unshare (util-linux) for PID-1 runs, mount
# for tmpfs seal paths, setpriv to run as another user; /bin/kill is the
# unit's ExecReload.
need=()
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v unshare >/dev/null || need+=(util-linux)
command -v setpriv >/dev/null || need+=(util-linux)
command -v mount >/dev/null || need+=(mount)
[ -x /bin/kill ] || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}"
fi

# Optional: promtool checks the metrics format, zabbix_agentd runs the
# UserParameters, systemd-analyze verifies the unit, debootstrap and
# systemd-nspawn boot the unit under a real systemd (a Debian root cached
# in /var/cache/venussup-test; debootstrap also builds the VM test's guest).
optional=()
command -v promtool >/dev/null || optional+=(prometheus)
command -v zabbix_agentd >/dev/null || optional+=(zabbix-agent)
command -v systemd-analyze >/dev/null || optional+=(systemd)
command -v debootstrap >/dev/null || optional+=(debootstrap)
command -v systemd-nspawn >/dev/null || optional+=(systemd-container)
command -v ansible-playbook >/dev/null || optional+=(ansible-core) # the role's test deploys two containers
command -v openssl >/dev/null || optional+=(openssl) # the https hooks' test CA
if [ ${#optional[@]} -gt 0 ]; then
  apt_install "${optional[@]}" ||
    echo "test.sh: could not install ${optional[*]}; the tests that need them will say SKIPPED"
fi

# Optional: curl asks the real Prometheus' and Zabbix frontend's HTTP
# APIs; the template is tested against a real Zabbix 6.0
# (integration/zabbix_server.rs): Debian's server on a PostgreSQL cluster
# the test makes, the frontend's API served by PHP's built-in server, the
# agent. Nothing is started here (policy-rc.d keeps packages from starting
# services); the test starts and stops its own, on loopback.
zabbix=()
command -v curl >/dev/null || zabbix+=(curl)
[ -x /usr/sbin/zabbix_server ] || zabbix+=(zabbix-server-pgsql)
[ -e /usr/share/zabbix/api_jsonrpc.php ] || zabbix+=(zabbix-frontend-php)
command -v php >/dev/null || zabbix+=(php-cli)
php -m 2>/dev/null | grep -qx pgsql || zabbix+=(php-pgsql)
[ -x /usr/lib/postgresql/15/bin/initdb ] || zabbix+=(postgresql)
if [ ${#zabbix[@]} -gt 0 ]; then
  apt_install "${zabbix[@]}" ||
    echo "test.sh: could not install ${zabbix[*]}; the real Zabbix server test will say SKIPPED"
fi

# The real-kernel test (integration/vm.rs) boots Debian's kernel under
# qemu, from a root debootstrap builds (cached in /var/cache/venussup-vm).
# On bookworm, qemu-system-x86 comes from bookworm-backports: the
# machine's qemu-utils may be from there, and bookworm's own
# qemu-system-x86 conflicts with it.
if ! command -v qemu-system-x86_64 >/dev/null; then
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  from=()
  if [ "$codename" = bookworm ]; then
    if ! grep -qsE '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
      /etc/apt/sources.list.d/*.sources; then
      # The mirror apt already uses for bookworm.
      mirror=$(sed -n 's/^URIs: *\([^ ]*\/debian\)\/\{0,1\}$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
      [ -n "$mirror" ] || mirror=$(sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\/debian\)\/\{0,1\} .*/\2/p' /etc/apt/sources.list 2>/dev/null | head -n 1)
      [ -z "$mirror" ] || {
        printf '%s\n' 'Types: deb' "URIs: $mirror" 'Suites: bookworm-backports' \
          'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
          >/etc/apt/sources.list.d/bookworm-backports.sources
        apt_updated=
      }
    fi
    from=(-t bookworm-backports)
  fi
  apt_install "${from[@]}" qemu-system-x86 ||
    echo "test.sh: could not install qemu-system-x86; the VM test will say SKIPPED"
fi

# Every test target, even after one fails.
exec cargo test --no-fail-fast "$@"
