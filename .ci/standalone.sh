# shellcheck shell=bash
#
# standalone_check DIR: builds and vets the nested module in DIR (pgstore,
# redisstore, otelpandadocauth) the way a user gets it, outside the workspace and without
# its replace directive, against the version of the root module that its
# go.mod requires. Skipped, saying why, when that version cannot be
# resolved from the module proxy (see RELEASING.md).

standalone_check() {
	local dir=$1 root=github.com/gopandadoc/pandadocauth
	local version
	version=$(cd "$dir" && GOWORK=off go list -m -f '{{.Version}}' "$root" 2>/dev/null)
	# With the replace in effect, go list prints the required version
	# through .Version all the same.
	if [[ -z $version ]]; then
		echo "standalone $dir: skipped: go.mod does not require $root" >&2
		return 0
	fi
	if [[ $version == v0.0.0-00010101000000-000000000000 ]]; then
		echo "standalone $dir: skipped: it requires $root at the placeholder $version (with a replace to ../): no release of the root module to require yet; see RELEASING.md" >&2
		return 0
	fi
	local tmp
	tmp=$(mktemp -d) || return 1
	if ! (cd "$tmp" && go mod init standalone.check >/dev/null 2>&1 && GOWORK=off GOFLAGS=-mod=mod go list -m "$root@$version" >/dev/null 2>"$tmp/err"); then
		echo "standalone $dir: skipped: $root@$version cannot be resolved from the module proxy ($(tr '\n' ' ' <"$tmp/err")); tag and push it first, see RELEASING.md" >&2
		rm -rf "$tmp"
		return 0
	fi
	mkdir "$tmp/mod"
	cp -R "$dir"/. "$tmp/mod"/
	(
		cd "$tmp/mod" &&
			go mod edit -dropreplace="$root" &&
			GOWORK=off GOFLAGS=-mod=mod go build ./... &&
			GOWORK=off GOFLAGS=-mod=mod go vet ./...
	)
	local rc=$?
	rm -rf "$tmp"
	if ((rc != 0)); then
		echo "standalone $dir: FAILED against $root@$version without the replace" >&2
		return 1
	fi
	echo "standalone $dir: builds against $root@$version without the replace" >&2
}
