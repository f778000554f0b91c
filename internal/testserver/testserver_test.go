package testserver

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A variable that names a server wins: nothing is started.
func TestEnvironmentOverrides(t *testing.T) {
	t.Setenv(PostgresEnv, "host=/elsewhere port=5432")
	if got := Postgres(t); got != "host=/elsewhere port=5432" {
		t.Errorf("Postgres = %q; want the variable's value", got)
	}
	tests := []struct {
		addr, network string
	}{
		{"127.0.0.1:6379", "tcp"},
		{"redis.internal:6380", "tcp"},
		{"/run/redis/redis.sock", "unix"},
	}
	for _, tt := range tests {
		t.Setenv(RedisAddrEnv, tt.addr)
		t.Setenv(RedisPasswordEnv, "pw")
		if got := Redis(t); got != (RedisServer{Network: tt.network, Addr: tt.addr, Password: "pw"}) {
			t.Errorf("Redis with %s=%q = %+v; want network %q", RedisAddrEnv, tt.addr, got, tt.network)
		}
	}
	postgres.mu.Lock()
	redis.mu.Lock()
	defer postgres.mu.Unlock()
	defer redis.mu.Unlock()
	if postgres.started || redis.started {
		t.Error("a server was started although its variable was set")
	}
}

// A started server answers on its socket, its variables are exported
// while it runs, and stop removes both it and them.
func TestStartStop(t *testing.T) {
	tests := []struct {
		name, env, binaries string
		start               func() (started, error)
		socket              func(env string) string
		check               func(t *testing.T, conn net.Conn)
	}{
		{
			name: "PostgreSQL", env: PostgresEnv, binaries: "initdb and postgres", start: startPostgres,
			socket: func(dsn string) string {
				dir := strings.TrimSuffix(strings.TrimPrefix(strings.Fields(dsn)[0], "host='"), "'")
				return filepath.Join(dir, ".s.PGSQL.5432")
			},
			check: func(t *testing.T, conn net.Conn) {
				// An SSLRequest: a server without TLS answers 'N'.
				conn.Write([]byte{0, 0, 0, 8, 4, 210, 22, 47})
				b := make([]byte, 1)
				if _, err := conn.Read(b); err != nil || b[0] != 'N' {
					t.Errorf("answer to an SSLRequest = %q, %v; want N", b, err)
				}
			},
		},
		{
			name: "Redis", env: RedisAddrEnv, binaries: "redis-server", start: startRedis,
			socket: func(addr string) string { return addr },
			check: func(t *testing.T, conn net.Conn) {
				r := bufio.NewReader(conn)
				conn.Write([]byte("PING\r\n"))
				if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "-NOAUTH") {
					t.Errorf("PING without the password = %q; want -NOAUTH", line)
				}
				conn.Write([]byte("AUTH " + os.Getenv(RedisPasswordEnv) + "\r\nPING\r\n"))
				for _, want := range []string{"+OK", "+PONG"} {
					if line, err := r.ReadString('\n'); strings.TrimSpace(line) != want {
						t.Errorf("got %q, %v; want %s", line, err, want)
					}
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Set to the empty value, and restored when the test ends.
			t.Setenv(tt.env, "")
			t.Setenv(RedisPasswordEnv, "")
			var s lazyServer
			if err := s.start(tt.start); err != nil {
				unavailable(t, tt.name, tt.env, tt.binaries, err)
			}
			stopped := false
			t.Cleanup(func() {
				if !stopped {
					s.stop()
				}
			})
			value := os.Getenv(tt.env)
			if value == "" {
				t.Fatalf("%s is not set while the server runs", tt.env)
			}
			socket := tt.socket(value)
			conn, err := net.DialTimeout("unix", socket, 10*time.Second)
			if err != nil {
				t.Fatalf("dialing %s: %v", socket, err)
			}
			conn.SetDeadline(time.Now().Add(time.Minute))
			tt.check(t, conn)
			conn.Close()

			s.stop()
			stopped = true
			if v := os.Getenv(tt.env); v != "" {
				t.Errorf("%s = %q after stop; want it unset", tt.env, v)
			}
			if _, err := os.Stat(filepath.Dir(socket)); !os.IsNotExist(err) {
				t.Errorf("the server's directory is left after stop: %v", err)
			}
		})
	}
}
