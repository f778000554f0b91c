# shellcheck shell=bash
#
# PostgreSQL for the tests of ./pgstore. Source this file, then:
#
#	pg_start   # throw-away cluster on 127.0.0.1; exports PANDADOCAUTH_PG_DSN
#	...        # go test ./...
#	pg_stop    # stops the cluster and deletes it
#
# pg_start installs PostgreSQL from the distribution's packages when no
# server binaries are found (this needs root and apt-get). The cluster
# lives in a temporary directory, trusts every local connection, listens
# on 127.0.0.1 only, and runs without fsync: it is for tests, never for
# data. When run as root, the server runs as the "postgres" user, which
# refuses to run as root.
#
# Variables (all optional):
#	PG_PORT      first port to try (default 15432); the next free one is used,
#	             and the next one again if the server cannot bind it
#	PG_DATABASE  database to create (default pandadocauth)

# pg_bindir prints the directory holding initdb and pg_ctl, newest
# PostgreSQL version first, or fails.
pg_bindir() {
	local dir
	if command -v pg_config >/dev/null 2>&1; then
		dir=$(pg_config --bindir 2>/dev/null)
		if [[ -x $dir/initdb && -x $dir/pg_ctl ]]; then
			printf '%s\n' "$dir"
			return 0
		fi
	fi
	for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -rn); do
		if [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]]; then
			printf '%s\n' "$dir"
			return 0
		fi
	done
	dir=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
	if [[ -x $dir/initdb && -x $dir/pg_ctl ]]; then
		printf '%s\n' "$dir"
		return 0
	fi
	return 1
}

# pg_as_owner runs a command as the cluster's owner.
pg_as_owner() {
	if [[ $EUID -eq 0 ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# pg_port_free reports whether nothing listens on 127.0.0.1:$1.
pg_port_free() {
	! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pg_start() {
	if [[ -n ${PG_CI_DIR:-} && -f ${PG_CI_DIR}/data/postmaster.pid ]]; then
		echo "pg_start: already running in $PG_CI_DIR ($PANDADOCAUTH_PG_DSN)" >&2
		return 0
	fi
	local bindir
	if ! bindir=$(pg_bindir); then
		if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
			echo "pg_start: no PostgreSQL server found; install PostgreSQL (initdb, pg_ctl)" >&2
			return 1
		fi
		echo "pg_start: installing PostgreSQL from the distribution's packages" >&2
		local log
		log=$(mktemp /tmp/pandadocauth-pg-install.XXXXXX.log) || return 1
		if ! { DEBIAN_FRONTEND=noninteractive apt-get update &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql; } >"$log" 2>&1; then
			echo "pg_start: installing PostgreSQL failed:" >&2
			tail -n 30 "$log" >&2
			rm -f "$log"
			return 1
		fi
		rm -f "$log"
		bindir=$(pg_bindir) || { echo "pg_start: PostgreSQL installed but initdb/pg_ctl not found" >&2; return 1; }
	fi
	if [[ $EUID -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
		useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin postgres ||
			{ echo "pg_start: cannot create the postgres user" >&2; return 1; }
	fi

	local dir
	# Not $TMPDIR: the postgres user must be able to reach the directory.
	dir=$(mktemp -d /tmp/pandadocauth-pg.XXXXXX) || return 1
	chmod 0700 "$dir"
	if [[ $EUID -eq 0 ]]; then
		chown postgres:postgres "$dir"
	fi

	if ! pg_as_owner "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1; then
		echo "pg_start: initdb failed:" >&2
		cat "$dir/initdb.log" >&2
		rm -rf "$dir"
		return 1
	fi

	# The default port lies below Linux's ephemeral range (32768-60999),
	# from which outgoing connections take their local ports: such a port
	# is not listened on, so the probe below cannot see it taken, and the
	# server's bind fails. So a bind failure moves on to the next port.
	local first=${PG_PORT:-15432}
	local port=$first
	while :; do
		while ((port <= first + 100)) && ! pg_port_free "$port"; do
			port=$((port + 1))
		done
		if ((port > first + 100)); then
			echo "pg_start: no port from $first to $((first + 100)) could be bound" >&2
			rm -rf "$dir"
			return 1
		fi
		# -w waits until the server accepts connections.
		if pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
			-o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
			start >/dev/null 2>"$dir/pg_ctl.log"; then
			break
		fi
		if grep -qE 'could not bind|Address already in use|could not create any TCP/IP sockets' "$dir/server.log" 2>/dev/null; then
			echo "pg_start: port $port is taken; trying the next one" >&2
			: >"$dir/server.log"
			port=$((port + 1))
			continue
		fi
		echo "pg_start: the server did not start:" >&2
		cat "$dir/pg_ctl.log" "$dir/server.log" >&2
		rm -rf "$dir"
		return 1
	done
	local db=${PG_DATABASE:-pandadocauth}
	if ! pg_as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db"; then
		echo "pg_start: createdb failed" >&2
		pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1
		rm -rf "$dir"
		return 1
	fi
	export PG_CI_DIR=$dir PG_CI_BINDIR=$bindir
	export PANDADOCAUTH_PG_DSN="postgres://postgres@127.0.0.1:$port/$db?sslmode=disable"
	echo "pg_start: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, PANDADOCAUTH_PG_DSN=$PANDADOCAUTH_PG_DSN" >&2
}

pg_stop() {
	if [[ -z ${PG_CI_DIR:-} ]]; then
		return 0
	fi
	if [[ -f $PG_CI_DIR/data/postmaster.pid ]]; then
		pg_as_owner "${PG_CI_BINDIR:-$(pg_bindir)}/pg_ctl" -D "$PG_CI_DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
			pg_as_owner "${PG_CI_BINDIR:-$(pg_bindir)}/pg_ctl" -D "$PG_CI_DIR/data" -m immediate stop >/dev/null 2>&1
	fi
	rm -rf "$PG_CI_DIR"
	unset PG_CI_DIR PG_CI_BINDIR PANDADOCAUTH_PG_DSN
}
