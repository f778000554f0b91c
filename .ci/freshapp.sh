# shellcheck shell=bash
#
# fresh_app_check [TOOLCHAIN]: the README's install recipe, run as a new
# user runs it before the first release. In a module of its own, in a
# temporary directory outside the repository, with `go 1.23.0` in its
# go.mod, the app in .ci/freshapp requires the four modules of this
# checkout through replace directives, is tidied, built and run against
# the servers that .ci/run started (PANDADOCAUTH_PG_DSN,
# PANDADOCAUTH_REDIS_ADDR, PANDADOCAUTH_REDIS_PASSWORD). The command is
# installed from the checkout, as the README says, and runs its demo.
# TOOLCHAIN (a GOTOOLCHAIN value, default local) is the user's Go. The
# check fails if anything does, or if go mod tidy raises the app's go
# line: a module of ours must not raise an app's Go version.

fresh_app_check() {
	local toolchain=${1:-local} repo tmp rc=0
	repo=$(pwd)
	tmp=$(mktemp -d) || return 1
	fresh_app_steps "$toolchain" "$repo" "$tmp" || rc=1
	rm -rf "$tmp"
	if ((rc != 0)); then
		echo "fresh app ($toolchain): FAILED" >&2
		return 1
	fi
	echo "fresh app ($toolchain): builds and runs from a checkout, and keeps go 1.23.0" >&2
}

fresh_app_steps() {
	local toolchain=$1 repo=$2 tmp=$3 root=github.com/gopandadoc/pandadocauth
	mkdir "$tmp/app" "$tmp/bin" &&
		cp "$repo/.ci/freshapp/main.go" "$tmp/app/" || return 1
	(
		export GOTOOLCHAIN=$toolchain GOWORK=off GOFLAGS=
		cd "$tmp/app" &&
			go mod init example.com/freshapp >/dev/null 2>&1 &&
			go mod edit -go=1.23.0 &&
			# The recipe, as in the README.
			go mod edit \
				-replace="$root=$repo" \
				-replace="$root/pgstore=$repo/pgstore" \
				-replace="$root/redisstore=$repo/redisstore" \
				-replace="$root/otelpandadocauth=$repo/otelpandadocauth" &&
			# The app imports pgx and go-redis itself: at the versions the
			# stores require, as the README says, since their newest
			# releases need a newer Go than 1.23.
			go mod edit \
				-require="github.com/jackc/pgx/v5@$(required "$repo/pgstore" github.com/jackc/pgx/v5)" \
				-require="github.com/redis/go-redis/v9@$(required "$repo/redisstore" github.com/redis/go-redis/v9)" &&
			go mod tidy &&
			go build -o freshapp . &&
			./freshapp || return 1
		local goline
		goline=$(go list -m -f '{{.GoVersion}}') || return 1
		if [[ $goline != 1.23.0 ]]; then
			echo "fresh app: go mod tidy raised its go line from 1.23.0 to $goline" >&2
			return 1
		fi
	) || return 1
	(
		export GOTOOLCHAIN=$toolchain GOBIN=$tmp/bin
		cd "$repo" && go install ./cmd/pandadoc-oauth
	) || return 1
	"$tmp/bin/pandadoc-oauth" demo >/dev/null || {
		echo "fresh app: pandadoc-oauth demo failed" >&2
		return 1
	}
}

# required prints the version of module $2 that the module in $1 requires.
required() {
	(cd "$1" && GOWORK=off go list -m -f '{{.Version}}' "$2")
}
