package testserver

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// postgresBinDir returns the directory holding initdb and postgres,
// the newest version first where several are installed.
func postgresBinDir() (string, error) {
	has := func(dir string) bool {
		for _, name := range []string{"initdb", "postgres"} {
			if info, err := os.Stat(filepath.Join(dir, name)); err != nil || info.IsDir() {
				return false
			}
		}
		return true
	}
	if pgConfig, err := exec.LookPath("pg_config"); err == nil {
		if out, err := exec.Command(pgConfig, "--bindir").Output(); err == nil {
			if dir := strings.TrimSpace(string(out)); has(dir) {
				return dir, nil
			}
		}
	}
	// Debian and Ubuntu keep the server binaries out of PATH; so do the
	// PGDG packages of Red Hat and its kin.
	var dirs []string
	for _, pattern := range []string{"/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin"} {
		m, _ := filepath.Glob(pattern)
		dirs = append(dirs, m...)
	}
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, dir := range dirs {
		if has(dir) {
			return dir, nil
		}
	}
	if initdb, err := exec.LookPath("initdb"); err == nil {
		if dir := filepath.Dir(initdb); has(dir) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("initdb and postgres: %w", errNotInstalled)
}

// versionOf is the major version in a directory such as
// /usr/lib/postgresql/15/bin, or 0.
func versionOf(dir string) int {
	for _, part := range strings.Split(dir, string(filepath.Separator)) {
		part = strings.TrimPrefix(part, "pgsql-")
		if v, err := strconv.Atoi(part); err == nil {
			return v
		}
	}
	return 0
}

// owner is the user a server runs as when it is not the test's own.
type owner struct {
	name     string
	uid, gid uint32
}

// postgresOwner returns the user PostgreSQL runs as: nil for the test's
// own user, or, when that is root (which PostgreSQL refuses), the
// postgres user that the distribution's packages create.
func postgresOwner() (*owner, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL refuses to run as root, and there is no postgres user to run it as: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("the postgres user's IDs %q:%q are not numbers", u.Uid, u.Gid)
	}
	return &owner{name: u.Username, uid: uint32(uid), gid: uint32(gid)}, nil
}

// tempDir makes a directory for a server, owned by o if set. Its path is
// short enough for a Unix socket inside it (at most 104 bytes on some
// systems), and another user reaches it.
func tempDir(prefix string, o *owner) (string, error) {
	parent := os.TempDir()
	if o != nil || len(parent) > 60 {
		// /tmp: another user can reach it, and its name is short.
		parent = "/tmp"
	}
	dir, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return "", err
	}
	if o != nil {
		if err := os.Chown(dir, int(o.uid), int(o.gid)); err != nil {
			os.RemoveAll(dir)
			return "", err
		}
	}
	return dir, nil
}

func startPostgres() (started, error) {
	if !supported {
		return started{}, fmt.Errorf("starting PostgreSQL on this system: %w", errNotInstalled)
	}
	bin, err := postgresBinDir()
	if err != nil {
		return started{}, err
	}
	o, err := postgresOwner()
	if err != nil {
		return started{}, err
	}
	dir, err := tempDir("pandadocauth-pg-", o)
	if err != nil {
		return started{}, err
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync")
	initdb.Dir = dir
	initdb.SysProcAttr = sysProcAttr(o, syscall.SIGKILL)
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return started{}, fmt.Errorf("initdb: %v:\n%s", err, out)
	}
	// A Unix socket in dir and no TCP port; no fsync: a server for
	// tests, never for data.
	srv := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", "5432", "-k", dir,
		"-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=200")
	srv.Dir = dir
	// If the test binary dies, the server shuts down at once.
	srv.SysProcAttr = sysProcAttr(o, syscall.SIGQUIT)
	p, err := startProcess(srv, "database system is ready to accept connections")
	if err != nil {
		os.RemoveAll(dir)
		return started{}, err
	}
	dsn := "host='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(dir) + "' port=5432 user=postgres dbname=postgres sslmode=disable"
	return started{
		env: map[string]string{PostgresEnv: dsn},
		halt: func() {
			p.halt(syscall.SIGINT) // fast shutdown
			os.RemoveAll(dir)
		},
	}, nil
}
