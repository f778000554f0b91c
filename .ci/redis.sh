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
#	REDIS_PORT   first port to try (default 56379); the next free one is used

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
	local port=${REDIS_PORT:-56379}
	while ! redis_port_free "$port"; do
		port=$((port + 1))
		if ((port > ${REDIS_PORT:-56379} + 100)); then
			echo "redis_start: no free port from ${REDIS_PORT:-56379}" >&2
			rm -rf "$dir"
			return 1
		fi
	done
	local password
	password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	# The password goes in a config file, not on the command line, where
	# ps would show it.
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
	if ! redis-server "$dir/redis.conf"; then
		echo "redis_start: redis-server did not start:" >&2
		cat "$dir/redis.log" >&2 2>/dev/null
		rm -rf "$dir"
		return 1
	fi
	local i
	for ((i = 0; i < 100; i++)); do
		if REDISCLI_AUTH=$password redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
			break
		fi
		sleep 0.1
	done
	if ((i == 100)); then
		echo "redis_start: redis-server does not answer:" >&2
		cat "$dir/redis.log" >&2 2>/dev/null
		redis_kill "$dir"
		rm -rf "$dir"
		return 1
	fi
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
