// Package testserver gives the tests of pgstore and redisstore a real
// PostgreSQL and a real Redis: the servers named by the environment if
// set, or else throw-away servers that it starts itself from the binaries
// installed on the machine, so that a plain go test runs every store test
// on a machine that has PostgreSQL and Redis installed.
//
// The variables, each of which overrides the server it names:
//
//	PANDADOCAUTH_PG_DSN          a PostgreSQL connection string
//	PANDADOCAUTH_REDIS_ADDR      host:port, or the path of a Unix socket
//	PANDADOCAUTH_REDIS_PASSWORD  its password, if any
//
// A server it starts listens on a Unix socket in a temporary directory of
// its own, and on no TCP port, so that no port can be taken already; it
// keeps nothing on disk that outlives it, and its variables are exported
// to the test process, so that the helper processes a test starts use the
// same server. It is started once per test binary, by the first test that
// asks for it, and stopped by Main's Run.
//
// Without the variable and without the binaries, a test that asks for a
// server is skipped, saying what to install, except under CI=true, where
// it fails: CI must run every store test.
package testserver

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// The variables that name the servers.
const (
	PostgresEnv      = "PANDADOCAUTH_PG_DSN"
	RedisAddrEnv     = "PANDADOCAUTH_REDIS_ADDR"
	RedisPasswordEnv = "PANDADOCAUTH_REDIS_PASSWORD"
)

// startTimeout bounds the start of a server: initdb and the server's own
// start, on a busy machine.
const startTimeout = 2 * time.Minute

// stopTimeout bounds the polite stop of a server, after which it is
// killed.
const stopTimeout = 30 * time.Second

// errNotInstalled means that the binaries of a server are not on this
// machine.
var errNotInstalled = errors.New("not installed")

// Postgres returns the connection string of the test PostgreSQL: the
// value of PANDADOCAUTH_PG_DSN if set, else that of a server started from
// the installed initdb and postgres (user postgres, database postgres).
func Postgres(t testing.TB) string {
	t.Helper()
	if dsn := os.Getenv(PostgresEnv); dsn != "" {
		return dsn
	}
	if err := postgres.start(startPostgres); err != nil {
		unavailable(t, "PostgreSQL", PostgresEnv, "initdb and postgres", err)
	}
	return os.Getenv(PostgresEnv)
}

// RedisServer is how to reach the test Redis.
type RedisServer struct {
	Network  string // "tcp" or "unix"
	Addr     string // host:port, or the path of a Unix socket
	Password string
}

// Redis returns the test Redis: the one PANDADOCAUTH_REDIS_ADDR names if
// set (with PANDADOCAUTH_REDIS_PASSWORD), else a server started from the
// installed redis-server, with a random password.
func Redis(t testing.TB) RedisServer {
	t.Helper()
	if os.Getenv(RedisAddrEnv) == "" {
		if err := redis.start(startRedis); err != nil {
			unavailable(t, "Redis", RedisAddrEnv, "redis-server", err)
		}
	}
	s := RedisServer{Network: "tcp", Addr: os.Getenv(RedisAddrEnv), Password: os.Getenv(RedisPasswordEnv)}
	if strings.HasPrefix(s.Addr, "/") {
		s.Network = "unix"
	}
	return s
}

// unavailable skips or fails t for a server that could not be had.
func unavailable(t testing.TB, name, env, binaries string, err error) {
	t.Helper()
	if !errors.Is(err, errNotInstalled) {
		t.Fatalf("starting a test %s: %v", name, err)
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("no %s: %s is not set and %s: %v (CI must run every store test)", name, env, binaries, err)
	}
	t.Skipf("no %s: install %s (the tests then start their own server), or set %s", name, binaries, env)
}

// Main wraps m, for TestMain, so that its Run stops the servers that the
// tests started once they have run. Pass the result to m's usual runner,
// such as goleak.VerifyTestMain, or call its Run and os.Exit.
func Main(m interface{ Run() int }) interface{ Run() int } { return mainRunner{m} }

type mainRunner struct{ m interface{ Run() int } }

func (r mainRunner) Run() int {
	code := r.m.Run()
	postgres.stop()
	redis.stop()
	return code
}

var postgres, redis lazyServer

// lazyServer is a server started by the first test that needs it.
type lazyServer struct {
	mu      sync.Mutex // guards the fields below
	started bool       // start was called
	err     error      // why it did not start
	env     []string   // the variables it set
	halt    func()     // stops it; nil if it is not running
}

// started is what a start function hands back: the variables that reach
// the server, and how to stop it.
type started struct {
	env  map[string]string
	halt func()
}

// start starts the server with f unless done already, and exports its
// variables. Every call after the first returns the first one's error.
func (s *lazyServer) start(f func() (started, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return s.err
	}
	s.started = true
	st, err := f()
	if err != nil {
		s.err = err
		return err
	}
	for k, v := range st.env {
		os.Setenv(k, v)
		s.env = append(s.env, k)
	}
	s.halt = st.halt
	return nil
}

// stop stops the server if it runs, and removes its variables.
func (s *lazyServer) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.halt != nil {
		s.halt()
		s.halt = nil
	}
	for _, k := range s.env {
		os.Unsetenv(k)
	}
	s.env = nil
}

// process is a server running as a child process, whose output is kept
// and watched for the line saying it is ready.
type process struct {
	cmd    *exec.Cmd
	out    *watchWriter
	exited chan struct{} // closed once the process has exited
	err    error         // from Wait; read after exited is closed
}

// startProcess starts cmd and waits until its output contains ready, it
// exits, or startTimeout passes.
func startProcess(cmd *exec.Cmd, ready string) (*process, error) {
	p := &process{cmd: cmd, out: newWatchWriter(ready), exited: make(chan struct{})}
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-p.out.ready:
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("%s exited (%v) before it was ready:\n%s", cmd.Path, p.err, p.out.tail())
	case <-timer.C:
		p.halt(nil)
		return nil, fmt.Errorf("%s was not ready after %v:\n%s", cmd.Path, startTimeout, p.out.tail())
	}
}

// halt sends sig (nil: none) and waits for the process to exit, killing
// it after stopTimeout.
func (p *process) halt(sig os.Signal) {
	if sig != nil {
		p.cmd.Process.Signal(sig)
		timer := time.NewTimer(stopTimeout)
		defer timer.Stop()
		select {
		case <-p.exited:
			return
		case <-timer.C:
		}
	}
	p.cmd.Process.Kill()
	<-p.exited
}

// maxOutput bounds the output kept of a server.
const maxOutput = 1 << 20

// watchWriter keeps a process's output, up to maxOutput, and closes ready
// once it contains want, in any letter case.
type watchWriter struct {
	want  []byte
	ready chan struct{}

	mu    sync.Mutex // guards buf and found
	buf   bytes.Buffer
	found bool
}

func newWatchWriter(want string) *watchWriter {
	return &watchWriter{want: bytes.ToLower([]byte(want)), ready: make(chan struct{})}
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf.Len()+len(p) <= maxOutput {
		w.buf.Write(p)
	}
	if !w.found && bytes.Contains(bytes.ToLower(w.buf.Bytes()), w.want) {
		w.found = true
		close(w.ready)
	}
	return len(p), nil
}

// tail returns the end of the output, for an error message.
func (w *watchWriter) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.buf.Bytes()
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}
