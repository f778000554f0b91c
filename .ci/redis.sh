# shellcheck shell=bash
#
# Redis for the tests of ./redisstore. Source this file, then:
#
#	redis_start   # throw-away server on 127.0.0.1 with a password; exports
#	              # PANDADOCAUTH_REDIS_ADDR and PANDADOCAUTH_REDIS_PASSWORD
#	...           # go test ./redisstore/...
#	redis_stop    # stops the server and deletes its directory
#
# redis_start installs redis-server from the distribution's packages when
# it is missing (this needs root and apt-get). The server keeps nothing
# on disk, listens on 127.0.0.1 only and requires a random password: it
# is for tests, never for data.
#
# Variables (all optional):
#	REDIS_PORT   first port to try (default 16379); the next free one is used,
#	             and the next one again if the server cannot bind it

# redis_port_free reports whether nothing listens on 127.0.0.1:$1.
redis_port_free() {
	! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

redis_start() {
	if [[ -n ${REDIS_CI_DIR:-} && -f ${REDIS_CI_DIR}/redis.pid ]]; then
		echo "redis_start: already running in $REDIS_CI_DIR ($PANDADOCAUTH_REDIS_ADDR)" >&2
		return 0
	fi
	if ! command -v redis-server >/dev/null 2>&1; then
		if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
			echo "redis_start: redis-server not found; install Redis" >&2
			return 1
		fi
		echo "redis_start: installing redis-server from the distribution's packages" >&2
		local log
		log=$(mktemp /tmp/pandadocauth-redis-install.XXXXXX.log) || return 1
		if ! { DEBIAN_FRONTEND=noninteractive apt-get update &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server; } >"$log" 2>&1; then
			echo "redis_start: installing redis-server failed:" >&2
			tail -n 30 "$log" >&2
			rm -f "$log"
			return 1
		fi
		rm -f "$log"
		command -v redis-server >/dev/null 2>&1 || { echo "redis_start: redis-server installed but not found" >&2; return 1; }
	fi

	local dir
	dir=$(mktemp -d /tmp/pandadocauth-redis.XXXXXX) || return 1
	local password
	password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	# The default port lies below Linux's ephemeral range (32768-60999),
	# from which outgoing connections take their local ports: such a port
	# is not listened on, so the probe below cannot see it taken, and the
	# server's bind fails. So a bind failure moves on to the next port.
	local first=${REDIS_PORT:-16379}
	local port=$first i
	while :; do
		while ((port <= first + 100)) && ! redis_port_free "$port"; do
			port=$((port + 1))
		done
		if ((port > first + 100)); then
			echo "redis_start: no port from $first to $((first + 100)) could be bound" >&2
			rm -rf "$dir"
			return 1
		fi
		# The password goes in a config file, not on the command line,
		# where ps would show it.
		cat >"$dir/redis.conf" <<CONF
bind 127.0.0.1
port $port
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
dir $dir
save ""
appendonly no
requirepass $password
CONF
		chmod 0600 "$dir/redis.conf"
		: >"$dir/redis.log"
		rm -f "$dir/redis.pid"
		if ! redis-server "$dir/redis.conf"; then
			echo "redis_start: redis-server did not start:" >&2
			cat "$dir/redis.log" >&2 2>/dev/null
			rm -rf "$dir"
			return 1
		fi
		for ((i = 0; i < 100; i++)); do
			if REDISCLI_AUTH=$password redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
				break 2
			fi
			if grep -qE 'Address already in use|Could not create server TCP listening socket' "$dir/redis.log" 2>/dev/null; then
				break
			fi
			sleep 0.1
		done
		redis_kill "$dir"
		if ((i < 100)); then
			echo "redis_start: port $port is taken; trying the next one" >&2
			port=$((port + 1))
			continue
		fi
		echo "redis_start: redis-server does not answer:" >&2
		cat "$dir/redis.log" >&2 2>/dev/null
		rm -rf "$dir"
		return 1
	done
	export REDIS_CI_DIR=$dir
	export PANDADOCAUTH_REDIS_ADDR=127.0.0.1:$port PANDADOCAUTH_REDIS_PASSWORD=$password
	echo "redis_start: $(redis-server --version | awk '{print $1, $2, $3}') on $PANDADOCAUTH_REDIS_ADDR, PANDADOCAUTH_REDIS_ADDR and PANDADOCAUTH_REDIS_PASSWORD exported" >&2
}

# redis_kill stops the server whose pid file is in $1.
redis_kill() {
	local pid
	pid=$(cat "$1/redis.pid" 2>/dev/null) || return 0
	kill "$pid" 2>/dev/null || return 0
	local i
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null
}

redis_stop() {
	if [[ -z ${REDIS_CI_DIR:-} ]]; then
		return 0
	fi
	redis_kill "$REDIS_CI_DIR"
	rm -rf "$REDIS_CI_DIR"
	unset REDIS_CI_DIR PANDADOCAUTH_REDIS_ADDR PANDADOCAUTH_REDIS_PASSWORD
}
